"""Tokenizers for verify: an HF folder's tokenizer.json, or one rebuilt from a GGUF's own vocabulary.

GGUF "gpt2" (byte-level BPE) vocabularies are rebuilt with the `tokenizers` library from
tokenizer.ggml.tokens and .merges; the pre-tokenizer follows tokenizer.ggml.pre where we know it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yarn_cli.core.checkpoint import architectures
from yarn_cli.errors import UnsupportedError
from yarn_cli.io.gguf_reader import GGUFFile, read_array

# tokenizer.ggml.model of byte-level BPE vocabularies (a tokenizer kind, not the GPT-2 architecture).
BYTE_LEVEL_BPE = "gpt2"


@dataclass
class TextTokenizer:
    """encode(text) -> ids without special tokens; decode(ids) -> text; bos: ids to start a prompt with.
    ``bos_id``/``eos_id``: the tokenizer's own special tokens, whether or not prompts start with BOS."""

    backend: object
    bos: list[int]
    bos_id: int | None = None
    eos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)


def prompt_prefix(encode_special: Callable[[str], list[int]], encode_plain: Callable[[str], list[int]]) -> list[int]:
    """The one BOS rule: a prompt starts with the special tokens the tokenizer itself puts before a text when asked
    for them (transformers' ``add_special_tokens=True``), whether its config says ``add_bos_token`` or its
    tokenizer.json post-processor adds them (Llama 3 folders); none when it adds none (SmolLM2, Qwen)."""
    probe = "The pass key is 12345."
    plain, full = encode_plain(probe), encode_special(probe)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def from_hf_folder(folder: Path) -> TextTokenizer:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.exists():
        raise UnsupportedError(f"{folder}: no tokenizer.json; the native engine needs a fast tokenizer (try --engine transformers)")
    backend = Tokenizer.from_file(str(path))
    config: dict = {}
    config_path = folder / "tokenizer_config.json"
    if config_path.exists():
        import json

        config = json.loads(config_path.read_text(encoding="utf-8"))

    def special(key: str) -> int | None:
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        return backend.token_to_id(token) if isinstance(token, str) else None

    bos = prompt_prefix(
        lambda text: backend.encode(text, add_special_tokens=True).ids, lambda text: backend.encode(text, add_special_tokens=False).ids
    )
    return TextTokenizer(backend, bos, special("bos_token"), special("eos_token"))


def from_gguf(gguf: GGUFFile) -> TextTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    kind = gguf.get("tokenizer.ggml.model")
    if kind != BYTE_LEVEL_BPE:
        return _through_transformers(gguf, kind)
    tokens = read_array(gguf, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in read_array(gguf, "tokenizer.ggml.merges")]
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    split_digits = bool(architectures.gguf_pre_tokenizer_splits_digits(str(gguf.get("tokenizer.ggml.pre", "default"))))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    backend.decoder = decoders.ByteLevel()
    token_types = read_array(gguf, "tokenizer.ggml.token_type") if "tokenizer.ggml.token_type" in gguf.fields else []
    specials = [tokens[i] for i, kind in enumerate(token_types) if kind == 3]  # CONTROL
    if specials:
        from tokenizers import AddedToken

        backend.add_special_tokens([AddedToken(t, special=True) for t in specials])
    return TextTokenizer(backend, *_gguf_specials(gguf))


def _gguf_specials(gguf: GGUFFile) -> tuple[list[int], int | None, int | None]:
    """(what a prompt starts with, the BOS id, the EOS id) as the GGUF's tokenizer keys say."""
    bos_id, eos_id = gguf.get("tokenizer.ggml.bos_token_id"), gguf.get("tokenizer.ggml.eos_token_id")
    bos_id, eos_id = (int(x) if x is not None else None for x in (bos_id, eos_id))
    return ([bos_id] if gguf.get("tokenizer.ggml.add_bos_token") and bos_id is not None else []), bos_id, eos_id


def _through_transformers(gguf: GGUFFile, kind: object) -> TextTokenizer:
    """A vocabulary other than byte-level BPE (SentencePiece's 'llama', as Gemma's GGUFs carry), rebuilt by
    transformers' own GGUF tokenizer converter, where transformers is installed."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        from yarn_cli.io.packages import needs

        option = f"{gguf.path}: the native engine, to rebuild a {kind!r} GGUF vocabulary,"
        raise UnsupportedError(needs(option, "transformers", "or use --engine llama.cpp")) from None
    path = Path(gguf.path)
    try:
        fast = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # noqa: BLE001 - a vocabulary transformers cannot convert is a reason, in words
        from yarn_cli.errors import first_line

        raise UnsupportedError(
            f"{gguf.path}: transformers cannot rebuild this {kind!r} vocabulary ({first_line(exc)}); use --engine llama.cpp"
        ) from exc
    return TextTokenizer(fast.backend_tokenizer, *_gguf_specials(gguf))


def chat_template(path: Path) -> str | None:
    """The checkpoint's own chat template (Jinja source): an HF folder's chat_template.jinja or
    tokenizer_config.json ``chat_template`` (the ``default`` one of a named list), a GGUF's
    ``tokenizer.chat_template``; None when it has none."""
    if path.suffix.lower() == ".gguf":
        from yarn_cli.io.gguf_reader import read_gguf

        value = read_gguf(path).get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    config_path = path / "tokenizer_config.json"
    if not config_path.exists():
        return None
    import json

    value = json.loads(config_path.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(value, list):  # named templates: [{"name": ..., "template": ...}]
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        value = named.get("default")
    return value if isinstance(value, str) and value else None
