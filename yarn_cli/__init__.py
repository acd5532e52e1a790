"""yarn_cli: YaRN context extension of RoPE language models, done right for every runtime."""

__version__ = "0.1.0"
