"""How extend names what it writes when the user gives no -o: one rule for HF folders, GGUF files and Modelfiles."""

from __future__ import annotations

from pathlib import Path


def extended_name(stem: str, scale: float) -> str:
    """The input's name, then YaRN and the factor: ``SmolLM2-135M-yarn4x`` (``.gguf`` added for a GGUF)."""
    return f"{stem}-yarn{scale:g}x"


def modelfile_path(gguf: Path) -> Path:
    """Ollama's Modelfile beside the GGUF it loads."""
    return gguf.with_name(gguf.name.removesuffix(".gguf") + ".Modelfile")
