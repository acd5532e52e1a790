"""Stand-in for RULER's scripts/data/tokenizer.py: yarn_cli's tokenizer of the checkpoint at ``tokenizer_path``,
counting as the engine counts a prompt (its BOS, then the text)."""

from pathlib import Path


def select_tokenizer(tokenizer_type, tokenizer_path):
    from yarn_cli.io import tokenizers_io

    path = Path(tokenizer_path)
    if path.suffix == ".gguf":
        from yarn_cli.io.gguf_reader import read_gguf

        tokenizer = tokenizers_io.from_gguf(read_gguf(path))
    else:
        tokenizer = tokenizers_io.from_hf_folder(path)

    class Counter:
        def text_to_tokens(self, text):
            return tokenizer.bos + tokenizer.encode(text)

    return Counter()
