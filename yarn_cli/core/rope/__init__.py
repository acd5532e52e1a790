"""RoPE itself: the frequency math, a checkpoint's RoPE state, variants, lengths."""
