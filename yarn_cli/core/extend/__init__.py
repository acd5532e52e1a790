"""`yarn extend`'s plans: config rewrites, GGUF records, bake rows, and how to serve the result."""
