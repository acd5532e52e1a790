"""The lm-evaluation-harness bridge: every engine as an lm-eval model, held to lm-eval's own ``hf`` model
request by request, and ``verify --lm-eval``. Offline: the tasks are local YAMLs over JSONL (examples/lm_eval_local_tasks.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from lm_eval import evaluator  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval_local_tasks import write_tasks  # noqa: E402

from yarn_cli import api  # noqa: E402
from yarn_cli.cli.app import main  # noqa: E402
from yarn_cli.errors import InputError  # noqa: E402
from yarn_cli.usecases.lm_eval_model import YarnLM  # noqa: E402

TASKS = ["yarn_mc", "yarn_gen", "yarn_rolling"]


@pytest.fixture(scope="module")
def setup(trained_tiny, tmp_path_factory):
    """The really trained tiny llama (L = 256), extended x4 by `yarn extend`, and the local tasks on held-out text."""
    work = tmp_path_factory.mktemp("lm-eval")
    extended = work / "tiny-x4"
    api.apply_extend(api.plan_extend(trained_tiny["model"], extended, scale=4))
    tasks = write_tasks(work / "tasks", trained_tiny["check_text"].read_text(encoding="utf-8"))
    return {"plain": trained_tiny["model"], "extended": extended, "tasks": tasks, "manager": TaskManager(include_path=str(tasks))}


def responses(model, setup, tasks=TASKS) -> dict[str, list]:
    """Each task's per-request responses, in document order, as lm-eval logged them."""
    out = evaluator.simple_evaluate(model=model, tasks=list(tasks), task_manager=setup["manager"], log_samples=True, bootstrap_iters=0)
    return {task: [sample["resps"] for sample in sorted(samples, key=lambda s: s["doc_id"])] for task, samples in out["samples"].items()}


def hf(path: Path):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(path), dtype="float32", device="cpu", batch_size=1)


def assert_same(ours: dict[str, list], theirs: dict[str, list], tolerance: float) -> float:
    """Every request equal: log-likelihoods within ``tolerance``, is_greedy and generated text identical. A
    rolling (whole-document) total is held to 1e-6 relative instead: hf sums thousands of token log-probabilities
    in float32, whose rounding alone is ~2e-3 at 26,000."""
    worst = 0.0
    assert ours.keys() == theirs.keys()
    for task in ours:
        for mine, reference in zip(ours[task], theirs[task], strict=True):
            for a, b in zip(mine, reference, strict=True):
                a, b = a[0], b[0]
                if isinstance(a, str):
                    assert a == b, task
                elif isinstance(a, (tuple, list)):
                    worst = max(worst, abs(a[0] - b[0]))
                    assert abs(a[0] - b[0]) < tolerance and bool(a[1]) == bool(b[1]), (task, a, b)
                else:
                    assert abs(a - b) < max(tolerance, 1e-6 * abs(b)), (task, a, b)
    return worst


@pytest.mark.parametrize("engine", ["native", "transformers"])
def test_the_extended_variant_equals_lm_evals_hf_model_on_the_extended_checkpoint(setup, engine):
    reference = responses(hf(setup["extended"]), setup)
    ours = YarnLM(path=str(setup["extended"]), engine=engine, variant="extended", device="cpu")
    assert ours.max_length == 1024  # the extended length, as hf reads it from the written config
    worst = assert_same(responses(ours, setup), reference, 1e-4)
    assert worst > 0 or engine == "transformers"  # the native pass is not transformers' own: equal, not identical
    # the check can fail: the paper's m on these weights is a different model
    other = responses(YarnLM(loaded=ours.engine, variant="m=1.3"), setup, ["yarn_mc"])["yarn_mc"]
    assert max(abs(x[0][0] - y[0][0]) for a, b in zip(other, reference["yarn_mc"]) for x, y in zip(a, b)) > 1e-2


def test_the_baseline_variant_equals_lm_evals_hf_model_on_the_unextended_checkpoint(setup):
    reference = responses(hf(setup["plain"]), setup)
    ours = YarnLM(path=str(setup["extended"]), engine="native", variant="baseline")
    assert ours.max_length == 256
    assert_same(responses(ours, setup), reference, 1e-4)


def test_rolling_windows_stay_within_the_variants_length(setup):
    """No engine call runs more than max_length positions (the one extra id is only scored), and the long
    document fills whole windows, so the check would see a longer one."""
    for variant, limit in (("extended", 1024), ("baseline", 256)):
        model = YarnLM(path=str(setup["extended"]), engine="native", variant=variant)
        seen: list[int] = []
        score = model.engine.score
        model.engine.score = lambda v, ids, start, seen=seen, score=score: seen.append(len(ids)) or score(v, ids, start)
        responses(model, setup, ["yarn_rolling"])
        assert max(seen) == limit + 1 and seen.count(limit + 1) >= 2, (variant, sorted(seen)[-5:])


def test_lm_evals_own_command_line_runs_the_yarn_model(setup, tmp_path):
    """python -m yarn_cli.lm_eval is lm-eval's CLI with --model yarn: --include_path, --limit and --output_path as usual."""
    out = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "yarn_cli.lm_eval",
            "--model",
            "yarn",
            "--model_args",
            f"path={setup['extended']},engine=native,variant=baseline",
            "--tasks",
            "yarn_mc",
            "--include_path",
            str(setup["tasks"]),
            "--limit",
            "4",
            "--output_path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (written,) = out.rglob("results_*.json")
    results = json.loads(written.read_text())
    assert results["n-samples"]["yarn_mc"]["effective"] == 4 and 0 <= results["results"]["yarn_mc"]["acc,none"] <= 1
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "yarn_cli.lm_eval",
            "--model",
            "yarn",
            "--model_args",
            f"path={setup['extended']},variant=m=abc",
            "--tasks",
            "yarn_mc",
            "--include_path",
            str(setup["tasks"]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "m=X takes a positive number" in bad.stderr and "Traceback" not in bad.stderr


def test_verify_runs_lm_eval_on_every_variant_and_gates_on_the_drop(setup, capsys):
    args = [
        "verify",
        str(setup["extended"]),
        "--tasks",
        "none",
        "--no-parity",
        "--variants",
        "extended,baseline,m=1.3",
        "--lm-eval",
        "yarn_mc,yarn_rolling",
        "--lm-eval-args",
        f"include_path={setup['tasks']},limit=8",
        "--json",
    ]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    report = json.loads(capsys.readouterr().out)
    section = report["lm_eval"]
    assert set(section["results"]) == {"extended", "baseline", "m=1.3"}
    acc = next(r for r in section["rows"] if r["task"] == "yarn_mc" and r["metric"] == "acc")
    for name, results in section["results"].items():  # lm-eval's own object, and the row reads from it
        assert results["results"]["yarn_mc"]["acc,none"] == acc["values"][name]
    assert acc["drop_points"] == pytest.approx(100 * (acc["values"]["baseline"] - acc["values"]["extended"]))
    assert exit_.value.code == 0 and report["verdict"]["ok"]  # no gate asked for
    assert report["lengths"] == [] and report["cells"] == [] and "lm-eval" in report["verdict"]["reason"]  # --tasks none
    # gated at 0 points: the run fails exactly when some fraction-valued metric dropped
    worst = max(r["drop_points"] for r in section["rows"] if r["drop_points"] is not None)
    with pytest.raises(SystemExit) as exit_:
        main(args[:-1] + ["--max-task-drop", "0", "--json"])
    gated = json.loads(capsys.readouterr().out)
    assert gated["verdict"]["ok"] == (worst <= 0) and exit_.value.code == (0 if worst <= 0 else 1)


def test_the_gate_judges_the_first_variant_against_the_second():
    from yarn_cli.usecases.verify.lm_eval_suite import compare, judge

    def result(acc, ppl):
        return {
            "results": {
                "t": {
                    "name": "t",
                    "alias": "t",
                    "sample_len": 100,
                    "acc,none": acc,
                    "acc_stderr,none": 0.03,
                    "word_perplexity,none": ppl,
                    "word_perplexity_stderr,none": "N/A",
                    "bits_per_byte,none": ppl / 20,
                }
            },
            "higher_is_better": {"t": {"acc": True, "word_perplexity": False, "bits_per_byte": False}},
        }

    rows = compare({"extended": result(0.50, 9.0), "baseline": result(0.53, 8.0)}, ["extended", "baseline"])
    assert [r["metric"] for r in rows] == ["acc", "word_perplexity", "bits_per_byte"]  # sample_len is a count
    acc, ppl, bpb = rows
    assert acc["drop_points"] == pytest.approx(3.0) and acc["difference_stderr"] == pytest.approx(math.hypot(0.03, 0.03))
    assert ppl["drop_points"] is None and ppl["difference"] == pytest.approx(1.0) and ppl["difference_stderr"] is None
    assert bpb["drop_points"] is None  # between 0 and 1, but not a score: compared, never gated
    assert not judge(rows, ["extended", "baseline"], 2.0).ok
    assert judge(rows, ["extended", "baseline"], 3.5).ok
    assert judge(rows, ["extended", "baseline"], None).aside  # reported only


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lm-eval", "no_such_task_xyz"], "lm-eval task 'no_such_task_xyz' is not known"),
        (["--lm-eval", "yarn_mc", "--lm-eval-args", "limit"], "is not key=value"),
        (["--lm-eval", "yarn_mc", "--lm-eval-args", "shots=3"], "shots is not lm-eval's"),
        (["--lm-eval", "yarn_mc", "--lm-eval-args", "include_path=/no/such/dir"], "no such folder of task YAMLs"),
        (["--lm-eval-args", "limit=3"], "go with --lm-eval TASKS"),
        (["--tasks", "none"], "--tasks none leaves nothing to run"),
        (["--variants", "extended"], "name two or more different variants"),
        (["--lm-eval", "yarn_mc", "--parity-only"], "--parity-only runs the parity check alone"),
    ],
)
def test_bad_lm_eval_input_is_one_line_and_loads_nothing(setup, capsys, monkeypatch, args, message):
    import yarn_cli.runtimes.base as base

    monkeypatch.setattr(base, "load_engine", lambda *a, **k: pytest.fail("the model loaded before the input was checked"))
    extra = list(args)
    if "--lm-eval-args" not in extra and "--lm-eval" in extra:
        extra += ["--lm-eval-args", f"include_path={setup['tasks']}"]
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(setup["extended"]), *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_task_whose_data_cannot_be_found_is_named(setup, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "lost.yaml").write_text(
        (setup["tasks"] / "yarn_mc.yaml")
        .read_text()
        .replace("task: yarn_mc", "task: lost")
        .replace(str(setup["tasks"] / "mc.jsonl"), str(tmp_path / "missing.jsonl"))
    )
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(setup["extended"]), "--lm-eval", "lost", "--lm-eval-args", f"include_path={tasks}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "lm-eval task 'lost': its data could not be loaded" in err and "include_path" in err


def test_sampling_is_refused_not_silently_greedy(setup):
    model = YarnLM(path=str(setup["extended"]), engine="native")

    class Request:
        args = ("def f():", {"until": ["\n"], "do_sample": True, "temperature": 0.7})

    with pytest.raises(InputError, match="decode greedily"):
        model.generate_until([Request()])


def test_without_lm_eval_the_flag_names_the_extra(setup, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.evaluator", None)
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(setup["extended"]), "--lm-eval", "yarn_mc"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "pip install 'yarn-cli[eval]'" in err


def test_the_python_api_offers_the_bridge():
    from yarn_cli.api import YarnLM as offered

    assert offered is YarnLM


def test_variant_names():
    from yarn_cli.core.rope import variants

    assert variants.parse_name("m=1.25") == ("m", 1.25)
    for bad in ("m=0", "m=-1", "m=nan", "x2", ""):
        with pytest.raises(InputError):
            variants.parse_name(bad)
    assert variants.parse_name(" paper ") == ("paper", None)


@pytest.fixture(scope="module")
def smollm2_x2(smollm2_gguf, tmp_path_factory):
    work = tmp_path_factory.mktemp("lm-eval-smollm2")
    out = work / "smollm2-x2.gguf"
    api.apply_extend(api.plan_extend(smollm2_gguf, out, scale=2))
    from lm_eval_local_tasks import held_out_text

    return {"model": out, "tasks": write_tasks(work / "tasks", held_out_text(), docs=12)}


def test_llama_cpp_agrees_with_the_native_engine_within_its_quantized_arithmetic(smollm2_x2):
    """The same Q4_1 GGUF x2: llama.cpp computes with quantized activations, the native engine in float32 over the
    dequantized weights. Each request agrees within that noise (relative to its log-likelihood), and llama.cpp's
    extended model is clearly nearer the native extended model than the native baseline."""
    pytest.importorskip("llama_cpp")
    setup = {"manager": TaskManager(include_path=str(smollm2_x2["tasks"]))}
    cpp = YarnLM(path=str(smollm2_x2["model"]), engine="llama.cpp", progress=False)
    native = YarnLM(path=str(smollm2_x2["model"]), engine="native", progress=False)
    baseline = YarnLM(loaded=native.engine, variant="baseline", progress=False)
    ours = responses(cpp, setup, ["yarn_mc"])["yarn_mc"]
    same = responses(native, setup, ["yarn_mc"])["yarn_mc"]
    other = responses(baseline, setup, ["yarn_mc"])["yarn_mc"]
    cpp.close()

    def gaps(a, b):
        return [abs(x[0][0] - y[0][0]) for p, q in zip(a, b) for x, y in zip(p, q)]

    near, far = gaps(ours, same), gaps(ours, other)
    scale = [abs(x[0][0]) for p in same for x in p]
    relative = sorted(d / s for d, s in zip(near, scale))
    # measured: relative median 0.7%, max 5.6%; mean 0.35 against 0.73 to the baseline on these short prompts
    assert relative[len(relative) // 2] < 0.02 and relative[-1] < 0.1, relative
    assert sum(far) / len(far) > 1.5 * sum(near) / len(near), (sum(far) / len(far), sum(near) / len(near))


@pytest.mark.slow
def test_smollm2_through_the_bridge_equals_lm_evals_hf_model(smollm2_x2, smollm2_gguf, tmp_path):
    """The real model on the HF side: SmolLM2 dequantized by transformers into a float32 folder, extended x2 by
    `yarn extend`; the native engine through the bridge against lm-eval's hf model on that folder, request by request."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain, extended = tmp_path / "smollm2", tmp_path / "smollm2-x2"
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype="float32")
    # transformers marks a GGUF-loaded model as quantized and will not save it: the same weights in a plain model
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype="float32")
    fresh.load_state_dict(model.state_dict())
    fresh.save_pretrained(plain)
    AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name).save_pretrained(plain)
    del model, fresh
    api.apply_extend(api.plan_extend(plain, extended, scale=2))
    setup = {"manager": TaskManager(include_path=str(smollm2_x2["tasks"]))}
    tasks = ["yarn_mc", "yarn_gen"]
    reference = responses(hf(extended), setup, tasks)
    ours = YarnLM(path=str(extended), engine="native", progress=False)
    assert ours.max_length == 16384
    assert_same(responses(ours, setup, tasks), reference, 1e-4)
    # the unextended model, as lm-eval's hf model runs the original folder
    assert_same(responses(YarnLM(loaded=ours.engine, variant="baseline"), setup, tasks), responses(hf(plain), setup, tasks), 1e-4)


CHATML = (
    "{% for message in messages %}{{ bos_token if loop.first else '' }}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HISTORIES = [
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What does len() return?"}],
    [{"role": "user", "content": "Q: 2+2?"}, {"role": "assistant", "content": "A: 4"}, {"role": "user", "content": "Q: 3+3?"}],
    [{"role": "user", "content": "Continue: the cat"}, {"role": "assistant", "content": "sat on the "}],
]


def test_chat_templates_render_as_lm_evals_hf_model_renders_them(setup, tmp_path):
    """--apply_chat_template: the checkpoint's template through transformers' renderer, the same prompt (and the
    same scores) as lm-eval's hf model, with and without a generation prompt (the last message then continued)."""
    import shutil

    folder = tmp_path / "chat"
    shutil.copytree(setup["extended"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHATML}))
    ours, theirs = YarnLM(path=str(folder), engine="native", progress=False), hf(folder)
    for history in HISTORIES:
        for generation_prompt in (True, False):
            assert ours.apply_chat_template(history, generation_prompt) == theirs.apply_chat_template(history, generation_prompt)
    assert ours.apply_chat_template(HISTORIES[0]).startswith("<|endoftext|><|im_start|>system")
    out = {
        name: evaluator.simple_evaluate(
            model=model, tasks=["yarn_mc"], task_manager=setup["manager"], log_samples=True, bootstrap_iters=0, apply_chat_template=True, limit=4
        )
        for name, model in (("ours", ours), ("hf", theirs))
    }
    prompts = [s["arguments"][0][0] for s in out["ours"]["samples"]["yarn_mc"]]
    assert all(p.startswith("<|endoftext|><|im_start|>user") for p in prompts)
    assert_same(
        {"yarn_mc": [s["resps"] for s in out["ours"]["samples"]["yarn_mc"]]}, {"yarn_mc": [s["resps"] for s in out["hf"]["samples"]["yarn_mc"]]}, 1e-4
    )
    with pytest.raises(InputError, match="no chat template"):
        YarnLM(path=str(setup["extended"]), engine="native").apply_chat_template(HISTORIES[0])


def test_a_gguf_chat_template_renders_and_tokenizes_alike_on_every_engine(smollm2_x2, smollm2_gguf):
    """SmolLM2's template lives in the GGUF metadata: the same prompt as transformers' tokenizer read from the
    GGUF renders, and the same ids from the native and the llama.cpp tokenizer (special tokens in the text parsed)."""
    pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    native = YarnLM(path=str(smollm2_x2["model"]), engine="native", progress=False)
    cpp = YarnLM(path=str(smollm2_x2["model"]), engine="llama.cpp", progress=False)
    try:
        for history in HISTORIES:
            prompt = native.apply_chat_template(history)
            assert prompt == reference.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
            assert prompt == cpp.apply_chat_template(history) and "<|im_start|>assistant" in prompt
            ids = native.tok_encode(prompt)
            assert ids == cpp.tok_encode(prompt) == reference.encode(prompt, add_special_tokens=False)
            assert ids.count(native.tokenizer.bos_id) >= 1  # <|im_start|> is one special token, not its characters
    finally:
        cpp.close()


def test_a_misspelt_model_arg_is_refused_by_name(setup):
    with pytest.raises(InputError, match="model arg 'engnie' is not known"):
        YarnLM(path=str(setup["extended"]), engnie="vllm")
    with pytest.raises(InputError, match="trust_remote_code"):
        YarnLM(path=str(setup["extended"]), trust_remote_code=True)
