"""llama.cpp's own HF -> GGUF converter, for tests that need GGUFs written exactly as users get them.

``convert_hf_to_gguf.py`` (with its ``conversion/`` package and the ``gguf-py`` it was written against) ships in
llama-cpp-python's source distribution under ``vendor/llama.cpp``. The sdist of the installed version is fetched
once with pip and only those files are unpacked, into the user cache (outside the repository).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from yarn_cli.io.default_model import cache_dir

_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter() -> Path:
    """The cached converter script of the installed llama-cpp-python's llama.cpp, fetched when missing."""
    version = importlib.metadata.version("llama-cpp-python")
    home = cache_dir() / f"llama.cpp-{version}"
    script = home / "convert_hf_to_gguf.py"
    if script.exists():
        return script
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            f"llama-cpp-python=={version}",
            "-d",
            tmp,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(f"cannot download llama-cpp-python {version}'s sources: {result.stderr.strip()[-300:]}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archives[0]) as archive:
            prefix = archive.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(_PARTS)]
            for member in members:
                member.name = member.name[len(prefix) :]
            archive.extractall(unpacked, members=members, filter="data")
        os.replace(unpacked, home)
    return script


def convert(folder: Path, out: Path, outtype: str = "f32", *flags: str) -> Path:
    """Run the converter on an HF folder, with its own gguf-py first on the path (``flags``: more of its options)."""
    script = converter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(script.parent / "gguf-py"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(script), str(folder), "--outfile", str(out), "--outtype", outtype, *flags], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed: {result.stderr.strip()[-800:]}")
    return out


def llama_cpp_logprobs(path: Path, ids: list[int], n_ctx: int = 512, **overrides):
    """llama.cpp's log-probability of each next token of ``ids`` (float64 torch tensor, one per position after the
    first); ``overrides``: GGUF metadata kv_overrides."""
    import llama_cpp
    import torch

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, kv_overrides=overrides or None)
    try:
        llm.eval(ids)
        scores = torch.log_softmax(torch.tensor(llm.scores[: len(ids)], dtype=torch.float64), -1)
    finally:
        llm.close()
    return scores[:-1][torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
