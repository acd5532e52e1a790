"""Faults during a write, on the installed `yarn` console script in real subprocesses: signals mid-write,
kill -9 and the reclaim of its leftovers, racing writers, full and read-only filesystems, permissions,
and whether OUT's files can change the input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tree_digest, write_config
from gguf_factory import write_large_gguf, write_tiny_gguf
from test_cli_inspect import subprocess_env

YARN = str(Path(sys.executable).with_name("yarn"))
BIG = 1 << 30  # large enough that every write here lasts well over the time a signal needs to land


def yarn(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([YARN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), **kwargs)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"yarn did not end within {timeout} s; its stderr: {err[-2000:]!r}")
    return process.returncode, out, err


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def wait_for_temporary(folder: Path, process: subprocess.Popen, timeout: float = 60) -> Path:
    """Block until the writer's temporary exists and holds bytes: the signal then lands mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in folder.iterdir():
            if ".yarn-tmp-" in entry.name and atomic_bytes(entry) > 0:
                return entry
        if process.poll() is not None:
            pytest.fail(f"the writer ended before it could be signalled: {process.communicate()}")
        time.sleep(0.005)
    pytest.fail("no temporary appeared")


def atomic_bytes(entry: Path) -> int:
    from yarn_cli.io.atomic import path_bytes

    try:
        return path_bytes(entry)
    except OSError:
        return 0


def big_gguf(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    return write_large_gguf(folder / "big.gguf", BIG)


def big_hf(folder: Path) -> Path:
    """A config-only HF extend of this folder with --copy copies a 1 GiB shard (sparse zeros)."""
    model = folder / "big-model"
    write_config(
        model,
        {
            "model_type": "llama",
            "hidden_size": 4096,
            "num_attention_heads": 32,
            "num_hidden_layers": 1,
            "max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "vocab_size": 32000,
        },
    )
    header = json.dumps({"lm_head.weight": {"dtype": "BF16", "shape": [BIG // 8192, 4096], "data_offsets": [0, BIG]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    with open(model / "model.safetensors", "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        handle.truncate(8 + len(raw) + BIG)
    return model


KINDS = {
    "gguf": (big_gguf, "out.gguf", []),
    "hf": (big_hf, "out", ["--copy"]),
}


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "kind, signum",
    [("gguf", signal.SIGTERM), ("gguf", signal.SIGHUP), ("gguf", signal.SIGINT), ("hf", signal.SIGTERM)],
    ids=["gguf-SIGTERM", "gguf-SIGHUP", "gguf-SIGINT", "hf-SIGTERM"],
)
def test_signal_mid_write_leaves_nothing(tmp_path, kind, signum):
    make, out_name, extra = KINDS[kind]
    source = make(tmp_path)
    before = listing(tmp_path)
    digest = tree_digest(source) if source.is_dir() else sha(source)
    process = yarn("extend", str(source), "-s", "2", "-o", str(tmp_path / out_name), *extra)
    wait_for_temporary(tmp_path, process)
    sent = time.monotonic()
    process.send_signal(signum)
    code, _, err = finish(process)
    assert time.monotonic() - sent < 5
    assert code == 128 + signum
    assert len(err.strip().splitlines()) == 1 and "nothing was left half-written" in err and "Traceback" not in err
    assert listing(tmp_path) == before
    assert (tree_digest(source) if source.is_dir() else sha(source)) == digest


@pytest.mark.parametrize("workers", [1, 2])
def test_a_signal_while_workers_write_waits_for_a_safe_point(tmp_path, workers, monkeypatch):
    """The handler used to raise wherever the main thread was, once inside concurrent.futures' locks: a
    worker then waited on that lock forever and `yarn extend` hung after SIGINT (seen once in CI). The
    signal now stops the write between pieces, with every worker finished and every descriptor closed."""
    import threading

    from yarn_cli.cli.app import HANDLED_SIGNALS, install_signal_handlers
    from yarn_cli.errors import Interrupted
    from yarn_cli.io import fastcopy, interrupts

    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes(os.urandom(1 << 20))
    plan = fastcopy.FilePlan(target, 1 << 20, source)
    plan.pieces = [fastcopy.Piece(i << 12, 1 << 12, source_offset=i << 12) for i in range(256)]
    calls, depths = [], []
    deliver = interrupts.deliver

    def recording_deliver(signum: int) -> None:
        depths.append(interrupts._depth)
        deliver(signum)

    monkeypatch.setattr(interrupts, "deliver", recording_deliver)

    def progress(length: int) -> None:
        calls.append(threading.current_thread() is threading.main_thread())
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread, wherever it is
        time.sleep(0.002)

    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    install_signal_handlers()
    fds_before = len(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(Interrupted):
            fastcopy.write_files([plan], workers, progress)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert depths == [1]  # the handler ran inside the deferred block, so it only took note
    assert 1 <= len(calls) < 256 and all(calls) == (workers == 1)
    assert not interrupts.pending() and len(os.listdir("/proc/self/fd")) == fds_before
    assert not any(thread.name.startswith("yarn-write") for thread in threading.enumerate())


def test_deferred_signals_are_raised_once_at_the_end():
    from yarn_cli.errors import Interrupted
    from yarn_cli.io import interrupts

    with pytest.raises(Interrupted) as caught:
        with interrupts.deferred():
            with interrupts.deferred():
                interrupts.deliver(signal.SIGTERM)
            assert interrupts.pending()  # the inner block does not raise: only the outermost does
    assert caught.value.signum == signal.SIGTERM and not interrupts.pending()
    with pytest.raises(Interrupted):
        interrupts.deliver(signal.SIGHUP)  # outside a deferred block it raises at once
    with pytest.raises(Interrupted):  # a signal wins over an error on its way out
        with interrupts.deferred():
            interrupts.deliver(signal.SIGINT)
            raise OSError("disk")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kill_9_leftovers_are_reclaimed_by_the_next_run(tmp_path, kind):
    make, out_name, extra = KINDS[kind]
    source = make(tmp_path)
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    out, reference = tmp_path / out_name, reference_dir / out_name
    assert finish(yarn("extend", str(source), "-s", "2", "-o", str(reference), *extra))[0] == 0

    process = yarn("extend", str(source), "-s", "2", "-o", str(out), *extra)
    leftover = wait_for_temporary(tmp_path, process)
    process.kill()
    process.wait()
    assert leftover.exists() and (tmp_path / f".{out_name}.yarn-lock").exists()  # what SIGKILL leaves

    code, _, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(out), *extra))
    assert code == 0, err
    assert "reclaimed" in err and leftover.name in err
    assert listing(tmp_path) == sorted([source.name, "reference", out_name])
    if out.is_dir():
        assert tree_digest(out) == tree_digest(reference)
    else:
        assert sha(out) == sha(reference)


def test_only_recorded_temporaries_are_reclaimed(tmp_path):
    """A stale lock naming a file of the user's (or one outside OUT's folder) removes nothing."""
    source = write_tiny_gguf(tmp_path / "t.gguf")
    mine = tmp_path / "notes.txt"
    mine.write_text("keep")
    lookalike = tmp_path / ".o.gguf.yarn-tmp-0123abcd"  # our pattern, but no run of ours recorded it
    lookalike.write_text("keep too")
    lock = tmp_path / ".o.gguf.yarn-lock"
    lock.write_text(json.dumps({"tool": "yarn_cli", "pid": 1, "host": "x"}) + "\nnotes.txt\n../t.gguf\n")
    code, _, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(tmp_path / "o.gguf")))
    assert code == 0 and "reclaimed" not in err
    assert mine.read_text() == "keep" and lookalike.read_text() == "keep too" and not lock.exists()


def test_racing_writers_one_wins_the_other_fails_cleanly(tmp_path):
    # 3 GiB: the first writer must still be writing once the second has started up, even on fast storage
    source = write_large_gguf(tmp_path / "big.gguf", 3 * BIG)
    out = tmp_path / "out.gguf"
    first = yarn("extend", str(source), "-s", "2", "-o", str(out))
    wait_for_temporary(tmp_path, first)
    code, _, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(out)))
    assert code == 6 and f"pid {first.pid}" in err and "another yarn_cli process" in err
    assert len(err.strip().splitlines()) == 1
    assert finish(first)[0] == 0
    assert listing(tmp_path) == ["big.gguf", "out.gguf"]
    from yarn_cli.io.gguf_reader import read_gguf

    assert read_gguf(out).get("llama.context_length") == 8192


def test_a_held_lock_is_refused_with_its_owner(tmp_path):
    """The same refusal, deterministic: this test process holds the output's lock as a live writer would."""
    import fcntl

    source = write_tiny_gguf(tmp_path / "t.gguf")
    lock = tmp_path / ".o.gguf.yarn-lock"
    with open(lock, "w") as handle:
        handle.write(json.dumps({"tool": "yarn_cli", "pid": os.getpid(), "host": "here"}) + "\n")
        handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        code, _, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(tmp_path / "o.gguf")))
    assert code == 6 and f"pid {os.getpid()} on here" in err and len(err.strip().splitlines()) == 1
    assert listing(tmp_path) == [".o.gguf.yarn-lock", "t.gguf"]


def small_hf(folder: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    model = folder / "small"
    write_config(
        model,
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "max_position_embeddings": 256,
            "vocab_size": 16,
        },
    )
    save_file({"lm_head.weight": np.ones((16, 64), np.float32)}, str(model / "model.safetensors"))
    return model


def test_copy_makes_out_independent_of_the_input(tmp_path):
    source = small_hf(tmp_path)
    digest = tree_digest(source)
    code, out, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(tmp_path / "copied"), "--copy", "--json"))
    assert code == 0, err
    actions = {Path(f["path"]).name: f["action"] for f in json.loads(out)["files"]}
    assert actions["model.safetensors"] in ("reflinked", "copied")
    with open(tmp_path / "copied" / "model.safetensors", "r+b") as handle:  # a tool rewriting OUT in place
        handle.seek(100)
        handle.write(b"\xff" * 64)
    assert tree_digest(source) == digest


def test_default_link_is_reported(tmp_path):
    source = small_hf(tmp_path)
    code, out, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(tmp_path / "linked"), "--json"))
    assert code == 0, err
    report = json.loads(out)
    action = {Path(f["path"]).name: f["action"] for f in report["files"]}["model.safetensors"]
    assert action in ("reflinked", "linked")
    if action == "linked":  # no reflinks on this filesystem: the user is told what sharing the inode means
        assert any("hard links to the input" in note and "--copy" in note for note in report["notes"])


@pytest.fixture
def mounted_tmpfs(tmp_path):
    """Mount small tmpfs file systems under tmp_path (root only); skipped where mounting is not allowed."""
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'}): the real-filesystem check is skipped")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_full_disk_on_a_real_small_filesystem(tmp_path, mounted_tmpfs):
    source = tmp_path / "in"
    source.mkdir()
    source = write_large_gguf(source / "m.gguf", 16 << 20)
    small = mounted_tmpfs("small", "size=4m")
    code, _, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(small / "o.gguf")))
    assert code == 6 and "no space left" in err and len(err.strip().splitlines()) == 1
    assert listing(small) == []


def test_read_only_filesystem(tmp_path, mounted_tmpfs):
    source = write_tiny_gguf(tmp_path / "t.gguf")
    read_only = mounted_tmpfs("ro", "ro,size=1m")
    code, _, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(read_only / "sub" / "o.gguf")))
    assert code == 6 and "not writable" in err and "Read-only" in err and len(err.strip().splitlines()) == 1
    assert listing(read_only) == []


def without_root_override(*args: str) -> tuple[int, str, str]:
    """Run yarn so that file modes apply: as root, drop the capabilities that let root ignore them."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file modes cannot be made to apply")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    process = subprocess.Popen([*prefix, YARN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    return finish(process)


def test_unreadable_input_and_read_only_output_folder(tmp_path):
    source = write_tiny_gguf(tmp_path / "t.gguf")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    code, _, err = without_root_override("extend", str(source), "-s", "2", "-o", str(locked / "o.gguf"))
    assert code == 6 and "not writable" in err and str(locked) in err and len(err.strip().splitlines()) == 1
    assert listing(locked) == []
    source.chmod(0o000)
    try:
        for verb in (["inspect"], ["extend", "-s", "2", "-o", str(tmp_path / "o.gguf")]):
            code, _, err = without_root_override(verb[0], str(source), *verb[1:])
            assert code != 0 and "Permission denied" in err and str(source) in err and "internal error" not in err
            assert len(err.strip().splitlines()) == 1
    finally:
        source.chmod(0o644)
    assert listing(tmp_path) == ["locked", "t.gguf"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    pytest.importorskip("torch")
    from test_verify import word_tokenizer
    from tiny_models import build_model

    folder = tmp_path_factory.mktemp("verify") / "llama"
    build_model("llama", seed=4).save_pretrained(folder)
    word_tokenizer(folder)
    return folder


def test_verify_on_nan_weights_is_a_clear_failing_report(tiny_llama, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    shutil.copytree(tiny_llama, folder)
    weights = load_file(folder / "model.safetensors")
    weights["model.layers.0.self_attn.q_proj.weight"][0, 0] = torch.nan
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    code, out, err = finish(yarn("verify", str(folder), "--lengths", "200", "--depths", "0.5", "--ppl-windows", "1", "--json"))
    assert code == 1, err
    report = json.loads(out)  # valid JSON: no NaN leaks into it
    assert not report["verdict"]["ok"] and "NaN" in report["verdict"]["reason"]
    assert "Traceback" not in err and "internal error" not in err
    code, out, err = finish(yarn("verify", str(folder), "--lengths", "200", "--depths", "0.5", "--ppl-windows", "1"))
    assert code == 1 and "NaN" in " ".join(out.split()) and "Traceback" not in err


def test_ctrl_c_during_verify_exits_130_promptly(tiny_llama):
    process = yarn("verify", str(tiny_llama), "--lengths", "250", "--depths", "0.1,0.5,0.9", "--trials", "2000", "--json")
    time.sleep(8)  # torch is imported and the ladder is running by now
    assert process.poll() is None, process.communicate()
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process, timeout=30)  # the run asked for would take far longer: 130 in time means it stopped
    assert code == 130, (code, time.monotonic() - sent)
    assert out == "" and "interrupted" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def reflink_filesystem(tmp_path, mounted_tmpfs):
    """An XFS image with reflinks, loop-mounted under tmp_path; skipped where that is not possible."""
    if not shutil.which("mkfs.xfs"):
        pytest.skip("mkfs.xfs is not installed (Debian: xfsprogs): the reflink check is skipped")
    image = mounted_tmpfs("images", "size=400m") / "xfs.img"
    with open(image, "wb") as handle:
        handle.truncate(320 << 20)
    made = subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], capture_output=True, text=True)
    point = tmp_path / "xfs"
    point.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(point)], capture_output=True, text=True)
    if made.returncode or mounted.returncode:
        pytest.skip(f"cannot loop-mount an XFS image here ({(made.stderr + mounted.stderr).strip()[:200]})")
    yield point
    subprocess.run(["umount", str(point)], capture_output=True)


def test_reflinks_by_default_where_the_filesystem_has_them(reflink_filesystem):
    source = small_hf(reflink_filesystem)
    digest = tree_digest(source)
    out = reflink_filesystem / "out"
    code, stdout, err = finish(yarn("extend", str(source), "-s", "2", "-o", str(out), "--json"))
    assert code == 0, err
    report = json.loads(stdout)
    assert {Path(f["path"]).name: f["action"] for f in report["files"]}["model.safetensors"] == "reflinked"
    assert not any("hard links" in note for note in report["notes"])
    assert os.stat(out / "model.safetensors").st_ino != os.stat(source / "model.safetensors").st_ino
    with open(out / "model.safetensors", "r+b") as handle:  # an in-place rewrite of OUT cannot reach the input
        handle.seek(100)
        handle.write(b"\xff" * 64)
    assert tree_digest(source) == digest
