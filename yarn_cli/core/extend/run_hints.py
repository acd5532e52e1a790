"""How to serve an extended checkpoint at its new length, engine by engine (docs/conventions.md §8).

One function makes the lines both the text output and ``extend --json``'s ``run`` show. Each engine has a
cap that a YaRN config alone does not lift: llama.cpp and Ollama default to a small context, vLLM and SGLang
derive theirs from the config (which `extend` raised to s·L, with the tokenizer's limit, so no override
variable is needed up to s·L).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def modelfile_text(gguf_name: str, target: int) -> str:
    """An Ollama Modelfile: Ollama's default context is small, and it caps num_ctx at context_length."""
    return f"FROM ./{gguf_name}\nPARAMETER num_ctx {target}\n"


def run_hints(fmt: str, output: Path, target: int, modelfile: Path | None = None) -> list[dict[str, Any]]:
    """``[{engine, command, note}]`` for the runtimes that load this format."""
    if fmt == "gguf":
        ollama = (
            f"ollama create {output.name.removesuffix('.gguf')} -f {modelfile.name}"
            if modelfile
            else f"a Modelfile with FROM ./{output.name} and PARAMETER num_ctx {target} (extend --modelfile writes it)"
        )
        return [
            {"engine": "llama.cpp", "command": f"llama-cli -m {output.name} -c {target}", "note": "-c 0 takes the new context_length from the file"},
            {
                "engine": "llama-server",
                "command": f"llama-server -m {output.name} -c {target}",
                "note": "--parallel P splits the context across P slots: give -c P x the length each needs",
            },
            {"engine": "ollama", "command": ollama, "note": "Ollama's default num_ctx is small and capped at context_length"},
        ]
    return [
        {
            "engine": "transformers",
            "command": f"AutoModelForCausalLM.from_pretrained({str(output)!r})",
            "note": "no cap beyond memory; generation_config and tokenizer limits were raised to the new length",
        },
        {
            "engine": "vllm",
            "command": f"vllm serve {output} --max-model-len {target}",
            "note": "beyond this length vLLM needs VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
        },
        {
            "engine": "sglang",
            "command": f"python -m sglang.launch_server --model-path {output} --context-length {target}",
            "note": "beyond this length SGLang needs SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1",
        },
    ]
