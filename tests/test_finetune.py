"""`yarn finetune` on transformers' Trainer, for real on CPU: loss, LoRA merge, resume, DDP on gloo, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree_digest
from test_cli_inspect import run, subprocess_env

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

FAST = ["--steps", "4", "--grad-accum", "1", "--lr", "1e-3", "--warmup", "0", "--save-steps", "2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_gguf) -> Path:
    """A tiny random llama (L = 128) with SmolLM2's real tokenizer, taken from the GGUF by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    folder = tmp_path_factory.mktemp("ft") / "tiny"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_chunked_loss_equals_transformers_loss(tiny):
    from transformers import AutoModelForCausalLM

    from yarn_cli.training.trainer import LossModel

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    ids = torch.randint(0, 1000, (2, 300))
    expected = model(input_ids=ids, labels=ids).loss
    got = LossModel(model)(ids, ids)["loss"]
    assert abs(got.item() - expected.item()) < 1e-5


def test_loss_falls_and_output_is_a_yarn_checkpoint(tiny, tmp_path, capsys):
    text = tmp_path / "one.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)  # one window, seen at every step
    before = tree_digest(tiny)
    out = tmp_path / "out"
    code, stdout, _ = run(
        [
            "finetune",
            str(tiny),
            "-o",
            str(out),
            "-s",
            "2",
            "--data",
            str(text),
            "--json",
            "--steps",
            "8",
            "--grad-accum",
            "1",
            "--lr",
            "3e-3",
            "--warmup",
            "0",
        ],
        capsys,
    )
    assert code == 0
    result = json.loads(stdout)
    losses = [item["loss"] for item in result["loss"]]
    assert result["steps"] == 8 and result["tokens"] == 8 * 256 and losses[-1] < losses[0] - 1.0, losses
    assert tree_digest(tiny) == before  # the input is never modified

    extended = tmp_path / "extended"
    assert run(["extend", str(tiny), "-s", "2", "-o", str(extended)], capsys)[0] == 0
    ours, theirs = json.loads((out / "config.json").read_text()), json.loads((extended / "config.json").read_text())
    assert ours["rope_scaling"].pop("finetuned") is True
    assert ours == theirs  # the same config whichever route a user takes
    record = json.loads((out / "yarn_finetune.json").read_text())
    assert record["recipe"]["beta2"] == 0.95 and record["versions"]["transformers"] and record["loss"] == result["loss"]
    assert not (tmp_path / ".out.yarn-finetune").exists()  # the work folder goes once OUT is written
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.rope_parameters["rope_type"] == "yarn" and model.config.rope_parameters["factor"] == 2.0


def test_lora_merges_into_plain_weights(tiny, tmp_path, capsys):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    code, _, err = run(["finetune", str(tiny), "-o", str(out), "-s", "2", "--lora-rank", "4", *FAST], capsys)
    assert code == 0, err
    merged, original = _weights(out), _weights(tiny)
    assert not any("lora" in name for name in merged) and set(merged) == set(original)
    changed = [n for n in merged if not torch.equal(merged[n], original[n])]
    assert changed and all(n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")) for n in changed)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.rope_parameters["rope_type"] == "yarn"


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tiny, tmp_path):
    from transformers import TrainerCallback

    from yarn_cli.core.finetune.plan import Recipe
    from yarn_cli.usecases.finetune import finetune

    recipe = Recipe(steps=4, grad_accum=1, lr=1e-3, warmup=0, save_steps=2)
    finetune(tiny, tmp_path / "whole", scale=2, recipe=recipe)

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt  # after checkpoint-2 was saved

    with pytest.raises(KeyboardInterrupt):
        finetune(tiny, tmp_path / "parts", scale=2, recipe=recipe, callbacks=[Crash()])
    assert not (tmp_path / "parts").exists() and (tmp_path / ".parts.yarn-finetune" / "checkpoint-2").is_dir()
    with pytest.raises(Exception, match="--resume"):
        finetune(tiny, tmp_path / "parts", scale=2, recipe=recipe)
    cut_off = tmp_path / ".parts.yarn-finetune" / "checkpoint-3"  # a save cut off mid-write: skipped
    cut_off.mkdir()
    (cut_off / "model.safetensors").write_bytes(b"partial")
    finetune(tiny, tmp_path / "parts", scale=2, recipe=recipe, resume=True)
    whole, parts = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert all(torch.equal(whole[name], parts[name]) for name in whole)


LAUNCHERS = {
    "ddp": ["--multi_gpu"],
    "fsdp2": [
        "--use_fsdp",
        "--fsdp_version",
        "2",
        "--fsdp_auto_wrap_policy",
        "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type",
        "SHARDED_STATE_DICT",
    ],
}


def _launch(tiny: Path, out: Path, flags: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *flags,
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "yarn_cli",
        "finetune",
        str(tiny),
        "-o",
        str(out),
        "-s",
        "2",
        "--json",
        *FAST,
    ]
    env = subprocess_env(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_interrupted_before_any_checkpoint_leaves_nothing(tiny, tmp_path):
    from transformers import TrainerCallback

    from yarn_cli.core.finetune.plan import Recipe
    from yarn_cli.usecases.finetune import finetune

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tiny, tmp_path / "o", scale=2, recipe=Recipe(steps=4, grad_accum=1, save_steps=50), callbacks=[Crash()])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_processes_under_accelerate_see_different_data_and_agree(tiny, tmp_path):
    """DDP over gloo on CPU, then FSDP2 on the same two processes: the same weights, bit for bit."""
    outputs = {}
    for name, flags in LAUNCHERS.items():
        out = tmp_path / name
        result = _launch(tiny, out, flags)
        assert result.returncode == 0, result.stderr[-3000:]
        record = json.loads((out / "yarn_finetune.json").read_text())
        ranks = record["ranks"]
        assert record["processes"] == 2 and len(ranks) == 2
        assert not set(ranks[0]["windows_loaded"]) & set(ranks[1]["windows_loaded"])
        assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
        assert json.loads(result.stdout)["tokens"] == 4 * 2 * 256  # one JSON object, from rank 0 only
        outputs[name] = _weights(out)
    assert all(torch.equal(outputs["ddp"][k], outputs["fsdp2"][k]) for k in outputs["ddp"])
    assert any(not torch.equal(outputs["ddp"][k], v) for k, v in _weights(tiny).items())


@pytest.mark.parametrize(
    "args, message",
    [
        (["MODEL.gguf", "-s", "2"], "trains Hugging Face weights"),
        (["TINY", "-s", "0.5"], "--scale"),
        (["TINY", "-s", "2", "--data", "nothere.txt"], "no such file"),
        (["TINY", "-s", "2", "--data", "SHORT"], "fewer than one window"),
        (["TINY", "-s", "2", "--seq-len", "50000000"], "needs about"),
        (["TINY", "-s", "2", "--resume"], "no complete checkpoint"),
        (["UNKNOWN", "-s", "2"], "does not know model type"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys, smollm2_gguf, args, message):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(
        json.dumps(
            {"model_type": "not-a-real-type", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128, "rope_theta": 10000.0}
        )
    )
    subs = {"TINY": str(tiny), "MODEL.gguf": str(smollm2_gguf), "SHORT": str(short), "UNKNOWN": str(unknown)}
    out = tmp_path / "out"
    code, _, err = run(["finetune", *[subs.get(a, a) for a in args], "-o", str(out), *FAST], capsys)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / ".out.yarn-finetune").exists()


def test_extended_input_keeps_its_scaling_and_refuses_a_conflicting_one(tiny, tmp_path, capsys):
    extended = tmp_path / "x4"
    assert run(["extend", str(tiny), "-s", "4", "-o", str(extended)], capsys)[0] == 0
    code, _, err = run(["finetune", str(extended), "-o", str(tmp_path / "o"), "-s", "2", *FAST], capsys)
    assert code == 2 and "conflicts" in err
    code, stdout, _ = run(["finetune", str(extended), "-o", str(tmp_path / "o"), "--seq-len", "128", "--json", *FAST], capsys)
    assert code == 0 and json.loads((tmp_path / "o" / "config.json").read_text())["rope_scaling"]["factor"] == 4.0


def test_corpus_reads_txt_jsonl_and_parquet(tmp_path):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from yarn_cli.errors import FormatError
    from yarn_cli.io.corpus import documents

    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from jsonl", "id": 1}) + "\n" + json.dumps({"text": "second"}) + "\n")
    pq.write_table(pa.table({"text": ["from parquet"]}), tmp_path / "c.parquet")
    paths = [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"]
    assert list(documents(paths)) == ["plain text", "from jsonl", "second", "from parquet"]
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(FormatError, match="no 'text' field"):
        list(documents([tmp_path / "d.jsonl"]))


def test_malformed_jsonl_is_one_line(tmp_path):
    pytest.importorskip("datasets")
    from yarn_cli.errors import FormatError
    from yarn_cli.io.corpus import documents

    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{not json at all\n')
    with pytest.raises(FormatError) as caught:
        list(documents([tmp_path / "bad.jsonl"]))
    assert "bad.jsonl" in str(caught.value) and "\n" not in str(caught.value)


def test_the_memory_check_counts_fsdp_and_zero3_sharding(tiny, tmp_path, monkeypatch):
    """A run that does not fit on one process fits on four under FSDP (full shard) or ZeRO-3, which shard the
    weights, gradients and optimizer state; DDP and FSDP's NO_SHARD shard nothing and stay refused."""
    from yarn_cli.api import Recipe, plan_finetune
    from yarn_cli.errors import InputError
    from yarn_cli.usecases import finetune

    estimates = []
    real = finetune.finetune_plan.training_memory
    monkeypatch.setattr(finetune.finetune_plan, "training_memory", lambda *a, **k: estimates.append(real(*a, **k).total) or real(*a, **k))
    recipe = Recipe(steps=4, seq_len=256, lora_rank=0)
    environments = {
        "single": {},
        "ddp": {"WORLD_SIZE": "4"},
        "fsdp": {"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true"},
        "fsdp-no-shard": {"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "NO_SHARD"},
        "zero3": {"WORLD_SIZE": "4", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
    }
    needed = {}
    for name, env in environments.items():
        for key in ("WORLD_SIZE", "ACCELERATE_USE_FSDP", "FSDP_SHARDING_STRATEGY", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        estimates.clear()
        try:
            plan_finetune(tiny, tmp_path / name, scale=2, recipe=recipe)
        except InputError:
            pass
        assert len(estimates) == 1, name
        needed[name] = estimates[0]
    assert needed["single"] == needed["ddp"] == needed["fsdp-no-shard"]
    assert needed["fsdp"] == needed["zero3"] < needed["single"]
