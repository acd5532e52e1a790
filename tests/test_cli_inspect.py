"""`yarn inspect` end to end: JSON contract, tables, errors as one line, no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config
from real_configs import LLAMA2_7B, QWEN3_8B_YARN

from yarn_cli.cli.app import main


def run(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def run_json(args, capsys):
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_json_contract_on_smollm2(smollm2_gguf, capsys):
    report = run_json(["inspect", str(smollm2_gguf), "--scale", "4"], capsys)
    assert report["rope"]["theta"] == 100000.0
    assert report["rope"]["head_dim"] == 64 and report["rope"]["rotary_dim"] == 64
    assert report["rope"]["original_context"] == 8192 and report["rope"]["scaling"] is None
    assert report["scale"] == 4.0 and report["attention_factor"] == pytest.approx(1.1386, abs=1e-4)
    assert report["correction_range"] == {"low": 10, "high": 20}
    for row in report["dimensions"]:
        assert {"pair", "inv_freq", "wavelength", "rotations", "ramp", "scaled_inv_freq"} <= set(row)
    # the table is transformers' YaRN for this model at x4, pair for pair
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(
        hidden_size=576,
        num_attention_heads=9,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "yarn", "rope_theta": 100000.0, "factor": 4.0, "original_max_position_embeddings": 8192},
    )
    expected, _ = ROPE_INIT_FUNCTIONS["yarn"](config, device="cpu")
    assert [row["scaled_inv_freq"] for row in report["dimensions"]] == pytest.approx(expected.double().tolist(), rel=1e-6)
    assert report["tensors"]["count"] == 272 and report["model"]["layers"] == 30


def test_kv_cache_per_token_is_what_llama_cpp_allocates(smollm2_gguf, capsys):
    """The bytes each token adds to the KV cache, as llama.cpp reports its own allocation (f16 cells) at load."""
    pytest.importorskip("llama_cpp")
    import re
    import subprocess
    import sys

    report = run_json(["inspect", str(smollm2_gguf)], capsys)
    load = f"import llama_cpp; llama_cpp.Llama({str(smollm2_gguf)!r}, n_ctx=2048, verbose=True)"
    log = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=300).stderr
    match = re.search(r"llama_kv_cache: size = +([0-9.]+) MiB \( *(\d+) cells", log)
    assert match, log[-2000:]
    assert report["kv_cache"]["bytes_per_token_16bit"] == float(match[1]) * 2**20 / int(match[2])


def test_method_all_compares(smollm2_gguf, capsys):
    report = run_json(["inspect", str(smollm2_gguf), "-s", "8", "--method", "all"], capsys)
    assert set(report["methods"]) == {"yarn", "linear", "ntk", "dynamic", "by-parts"}
    assert report["methods"]["yarn"]["attention_factor"] == pytest.approx(1.2079, abs=1e-4)
    np.testing.assert_allclose(report["methods"]["linear"]["scaled_inv_freq"], [r["inv_freq"] / 8 for r in report["dimensions"]])
    code, out, _ = run(["inspect", str(smollm2_gguf), "-s", "8", "--method", "all"], capsys)
    assert code == 0 and "by-parts" in out


def test_table_output(smollm2_gguf, capsys):
    code, out, _ = run(["inspect", str(smollm2_gguf), "--scale", "4"], capsys)
    assert code == 0
    assert "base 100,000, head dim 64, rotary dim 64" in out
    assert "attention factor m = 1.1386" in out and "extrapolate" in out and "interpolate" in out


def make_sharded_folder(folder: Path, config: dict) -> Path:
    from safetensors.numpy import save_file

    write_config(folder, config)
    shards = {
        "model-00001-of-00002.safetensors": {"a": np.zeros((4, 4), np.float16)},
        "model-00002-of-00002.safetensors": {"b": np.zeros((8,), np.float32), "c": np.zeros((2, 3), np.float16)},
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name))
        weight_map.update({t: name for t in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_sharded_hf_folder(tmp_path, capsys):
    folder = make_sharded_folder(tmp_path / "llama2", LLAMA2_7B)
    report = run_json(["inspect", str(folder)], capsys)
    assert report["tensors"] == {"count": 3, "parameters": 30, "bytes": 4 * 4 * 2 + 8 * 4 + 6 * 2, "dtypes": {"F16": 2, "F32": 1}, "files": 2}
    assert report["rope"]["original_context"] == 4096 and report["scale"] is None


def test_index_escaping_the_folder_is_refused(tmp_path, capsys):
    folder = make_sharded_folder(tmp_path / "m", LLAMA2_7B)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    code, out, err = run(["inspect", str(folder)], capsys)
    assert code == 3 and "outside the model folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_declared_scaling_is_shown(tmp_path, capsys):
    write_config(tmp_path / "q3", QWEN3_8B_YARN)
    report = run_json(["inspect", str(tmp_path / "q3")], capsys)
    assert report["existing"] and report["method"] == "yarn" and report["rope"]["scaling"]["factor"] == 4.0
    assert report["correction_range"] == {"low": 23, "high": 40}
    assert any("!= max_position_embeddings/original" in w for w in report["warnings"])


def test_names_from_files_are_escaped(tmp_path, capsys):
    write_config(tmp_path / "evil", {**LLAMA2_7B, "architectures": ["[bold red]Evil[/]"]})
    code, out, _ = run(["inspect", str(tmp_path / "evil")], capsys)
    assert code == 0 and "[bold red]Evil[/]" in out


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "setup, code, message",
    [
        (lambda d: d / "nope", 2, "no such file"),
        (lambda d: write_config(d / "g", {"model_type": "gpt2", "n_embd": 64, "n_head": 2}).parent, 4, "does not use RoPE"),
        (lambda d: _write(d / "x.gguf", b"NOPE" * 10), 3, "not a GGUF"),
        (lambda d: _write(d / "c" / "config.json", b"{oops").parent, 3, "not valid JSON"),
        (lambda d: _write(d / "w.bin", b"x"), 2, "unsupported file type"),
    ],
    ids=["missing", "gpt2", "bad-gguf", "bad-json", "bin"],
)
def test_errors_are_one_line(tmp_path, capsys, setup, code, message):
    target = setup(tmp_path)
    got, out, err = run(["inspect", str(target)], capsys)
    assert got == code and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and out == ""
    got, _, err = run(["--debug", "inspect", str(target)], capsys)
    assert got == code and "Traceback" in err


def test_bad_flags(smollm2_gguf, capsys):
    assert run(["inspect", str(smollm2_gguf), "--scale", "0.5"], capsys)[0] == 2
    assert run(["inspect", str(smollm2_gguf), "--method", "magic"], capsys)[0] == 2
    assert run(["inspect", str(smollm2_gguf), "--original-context", "0"], capsys)[0] == 2


def test_original_context_override(smollm2_gguf, capsys):
    report = run_json(["inspect", str(smollm2_gguf), "--original-context", "4096", "-s", "2"], capsys)
    assert report["rope"]["original_context"] == 4096 and report["rope"]["original_context_source"] == "--original-context"


def test_plot(smollm2_gguf, tmp_path, capsys):
    target = tmp_path / "w.png"
    code, _, err = run(["inspect", str(smollm2_gguf), "-s", "4", "--plot", str(target)], capsys)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 2 and "pip install 'yarn-cli[plot]'" in err and not target.exists()
    else:
        assert code == 0 and target.read_bytes()[:4] == b"\x89PNG"


def test_default_model_when_none_given(smollm2_gguf, capsys):
    code, out, err = run(["inspect", "--json"], capsys)
    assert code == 0 and json.loads(out)["source"] == str(smollm2_gguf)
    assert "built-in default model" in err


def subprocess_env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_inspect_and_extend_never_import_torch(smollm2_gguf, tmp_path):
    from safetensors.numpy import save_file

    folder = make_sharded_folder(tmp_path / "m", LLAMA2_7B)
    tiny = tmp_path / "tiny"
    write_config(
        tiny,
        {
            "model_type": "llama",
            "hidden_size": 8,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "num_hidden_layers": 1,
            "max_position_embeddings": 64,
            "vocab_size": 4,
        },
    )
    save_file(
        {
            "model.layers.0.self_attn.q_proj.weight": np.ones((8, 8), np.float16),
            "model.layers.0.self_attn.k_proj.weight": np.ones((8, 8), np.float16),
        },
        str(tiny / "model.safetensors"),
    )
    runs = [
        ["inspect", str(smollm2_gguf), "-s", "4", "--method", "all"],
        ["inspect", str(folder), "--json"],
        ["extend", str(smollm2_gguf), "-s", "2", "-o", str(tmp_path / "o.gguf")],
        ["extend", str(tiny), "-s", "2", "-o", str(tmp_path / "plain")],
        ["extend", str(tiny), "-s", "2", "--bake-temperature", "-o", str(tmp_path / "baked")],
    ]
    code = (
        "import sys\n"
        "from yarn_cli.cli.app import main\n"
        f"for args in {runs!r}:\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr


def test_inspect_and_config_only_extend_never_import_numpy(smollm2_gguf, tmp_path):
    """Start-up is what a user waits for: inspect, GGUF and config-only HF extends skip numpy's import
    (and a --json run skips rich's console)."""
    folder = make_sharded_folder(tmp_path / "m", LLAMA2_7B)
    inspects = [
        ["inspect", str(folder), "-s", "8", "--json"],
        ["inspect", str(smollm2_gguf), "-s", "4", "--method", "all", "--json"],
    ]
    extends = [
        ["extend", str(smollm2_gguf), "-s", "2", "-o", str(tmp_path / "o.gguf"), "--json"],
        ["extend", str(folder), "-s", "2", "-o", str(tmp_path / "plain"), "--json"],
    ]
    code = (
        "import sys\n"
        "from yarn_cli.cli.app import main\n"
        "def run(args):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        f"for args in {inspects!r}:\n    run(args)\n"
        "assert 'rich.console' not in sys.modules, 'rich.console was imported'\n"
        f"for args in {extends!r}:\n    run(args)\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr


def test_hub_offline_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "yarn_cli", "inspect", "some-org/some-model"],
        capture_output=True,
        text=True,
        env=subprocess_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path)),
    )
    assert result.returncode == 7
    assert "cannot fetch config.json" in result.stderr and "offline" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_module_entry_point_and_version():
    result = subprocess.run([sys.executable, "-m", "yarn_cli", "--version"], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0 and result.stdout.startswith("yarn_cli ")
