"""Reading checkpoints: config and GGUF metadata readers, the family registry, the KV cache."""
