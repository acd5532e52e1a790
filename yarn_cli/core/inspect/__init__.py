"""`yarn inspect`'s choices (the per-pair tables themselves are `core.rope.analysis`)."""
