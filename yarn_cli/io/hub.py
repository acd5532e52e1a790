"""Hugging Face Hub access: config.json and safetensors headers only, never weights.

huggingface-hub honours HF_HUB_OFFLINE itself; every failure becomes one FetchError line.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from yarn_cli.core.rope.spec import TensorStats
from yarn_cli.errors import FetchError, FormatError


def _explain(repo_id: str, what: str, exc: Exception) -> FetchError:
    from huggingface_hub import errors

    if isinstance(exc, errors.LocalEntryNotFoundError) or "offline" in str(exc).lower():
        reason = "not in the local cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1); fetch it when online or pass a local folder"
    elif isinstance(exc, errors.GatedRepoError):
        reason = "the repo is gated: accept its terms on the hub and log in (hf auth login)"
    elif isinstance(exc, errors.RepositoryNotFoundError):
        reason = "no such repo (or it is private: log in with hf auth login)"
    elif isinstance(exc, errors.RevisionNotFoundError):
        reason = "no such revision"
    elif isinstance(exc, errors.EntryNotFoundError):
        reason = f"the repo has no {what}"
    else:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'request failed'}"
    return FetchError(f"{repo_id}: cannot fetch {what}: {reason}")


def _quiet_and_reachable(repo_id: str) -> None:
    """Silence huggingface-hub's retry chatter, and fail at once when the hub's host does not resolve.

    Without the DNS check a machine with no network waits through five retries (~25 s) first.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    if constants.HF_HUB_OFFLINE:
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        try:  # a cached copy still serves offline
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
                constants.HF_HUB_OFFLINE = True
                return
        except Exception:
            pass
        raise FetchError(
            f"{repo_id}: cannot reach {host} ({exc.strerror or exc}) and the repo is not in the local cache; "
            "fetch it when online or pass a local folder"
        ) from exc


def fetch_config(repo_id: str, revision: str | None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    _quiet_and_reachable(repo_id)
    try:
        path = hf_hub_download(repo_id, "config.json", revision=revision)
    except Exception as exc:  # huggingface-hub raises many types (HTTP, offline, validation)
        raise _explain(repo_id, "config.json", exc) from exc
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{repo_id}: config.json is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{repo_id}: config.json must be a JSON object")
    return data


def fetch_tensor_stats(repo_id: str, revision: str | None) -> TensorStats:
    """Tensor counts and bytes from the safetensors headers, read remotely with range requests."""
    from huggingface_hub import HfApi, constants, errors

    if constants.HF_HUB_OFFLINE:
        return TensorStats()  # headers are read remotely; offline, show the config alone
    try:
        meta = HfApi().get_safetensors_metadata(repo_id, revision=revision)
    except errors.NotASafetensorsRepoError:
        return TensorStats()
    except Exception as exc:
        raise _explain(repo_id, "safetensors headers", exc) from exc
    from yarn_cli.io.safetensors_header import DTYPE_BYTES

    dtypes: Counter[str] = Counter()
    count = parameters = nbytes = 0
    for file_meta in meta.files_metadata.values():
        for info in file_meta.tensors.values():
            numel = 1
            for dim in info.shape:
                numel *= dim
            count += 1
            parameters += numel
            nbytes += int(numel * DTYPE_BYTES.get(info.dtype, 0))
            dtypes[info.dtype] += 1
    return TensorStats(count=count, parameters=parameters, bytes=nbytes, dtypes=dict(dtypes), files=len(meta.files_metadata))


def download_snapshot(repo_id: str, revision: str | None) -> str:
    """The repo's files in the local hub cache (weights included: extend writes a whole checkpoint).

    Pickled weights are skipped: they are never loaded, and safetensors is what extend reads.
    """
    from huggingface_hub import snapshot_download

    _quiet_and_reachable(repo_id)
    try:
        return snapshot_download(repo_id, revision=revision, ignore_patterns=["*.bin", "*.pt", "*.pth", "original/*"])
    except Exception as exc:
        raise _explain(repo_id, "the checkpoint files", exc) from exc
