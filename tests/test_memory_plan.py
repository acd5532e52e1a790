"""Memory on a GPU box, shown on a CPU: the transformers engine never holds a positions x vocabulary float32
tensor at long lengths, and the parity check's length and memory follow where its reference runs."""

from __future__ import annotations

import pytest
from test_verify import word_tokenizer
from tiny_models import build_model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# each head does more than a matrix product: soft-capping (Gemma 3), a divisor (Granite), a multiplier (Falcon-H1)
HEADS = {
    "llama": {},
    "gemma3_text": {"final_logit_softcapping": 5.0},
    "granite": {"logits_scaling": 8.0},
    "falcon_h1": {"lm_head_multiplier": 3.0},
}


@pytest.mark.parametrize("model_type", sorted(HEADS))
def test_scoring_a_slice_of_rows_at_a_time_equals_one_pass(model_type, tmp_path, monkeypatch):
    """Past the logits budget the head runs over slices of the decoder's states: the same losses and greedy hits
    as the whole-sequence pass, within float32 noise, for heads that cap or scale their logits; and the largest
    logits tensor the model makes is a slice, never the whole sequence."""
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes import transformers as engine_module

    folder = tmp_path / model_type
    build_model(model_type, seed=1, **HEADS[model_type]).save_pretrained(folder)
    word_tokenizer(folder)
    engine = engine_module.TransformersEngine(folder, "cpu")
    declared = variants.declared(engine.facts.rope, engine.facts.baked_attention_factor)
    ids = [3 + (i * 7) % 60 for i in range(197)]
    whole = engine.score(declared, ids, 5)
    shapes = []
    head = engine.model.get_output_embeddings()
    hook = head.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    monkeypatch.setattr(engine_module, "LOGITS_BYTES", 0)
    monkeypatch.setattr(engine_module, "HEAD_ROWS", 16)
    rows = engine.score(declared, ids, 5)
    hook.remove()
    assert len(rows.losses) == len(whole.losses) == 191
    assert max(abs(a - b) for a, b in zip(rows.losses, whole.losses)) < 1e-5
    assert rows.greedy == whole.greedy
    assert max(shape[1] for shape in shapes) == 16
    # the capping or scaling was applied: the bare head on the same states gives other losses
    if HEADS[model_type]:
        plain = build_model(model_type, seed=1).save_pretrained(tmp_path / "plain") or tmp_path / "plain"
        word_tokenizer(plain)
        other = engine_module.TransformersEngine(plain, "cpu").score(declared, ids, 5)
        assert max(abs(a - b) for a, b in zip(other.losses, whole.losses)) > 1e-3


@pytest.fixture(scope="module")
def long_trained(tmp_path_factory):
    """A tiny llama declaring L = 4,096, extended x4: 1.5·L is 6,144, past the CPU's 1,024 cap."""
    from yarn_cli.api import apply_extend, plan_extend

    root = tmp_path_factory.mktemp("placement")
    build_model("llama", seed=1, max_position_embeddings=4096).save_pretrained(root / "plain")
    word_tokenizer(root / "plain")
    apply_extend(plan_extend(root / "plain", root / "x4", scale=4))
    return root / "x4"


@pytest.mark.parametrize(
    "gpu_free, device, length",
    [
        (None, "cpu", 1024),  # no GPU: the CPU reference, capped, whatever device the engine says it runs on
        (1 << 40, "cuda", 6144),  # a GPU with room: the reference there, at 1.5·L
        (1 << 10, "cpu", 1024),  # a GPU too full for the float32 reference: back to the CPU, capped
    ],
)
def test_the_parity_length_follows_where_the_reference_runs(long_trained, monkeypatch, gpu_free, device, length):
    from types import SimpleNamespace

    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.usecases.verify import parity_check

    loaded = NativeEngine(long_trained, "cpu")
    # an engine on a GPU: before, the cap was keyed on its device, so it got a 6,144-token float32 CPU reference
    engine = SimpleNamespace(
        facts=loaded.facts, path=loaded.path, tokenizer=loaded.tokenizer, name="native", device="cuda", available_memory=lambda: 1 << 40
    )
    monkeypatch.setattr(parity_check, "_gpu_free", lambda: gpu_free)
    notes: list[str] = []
    planned = parity_check.plan(engine, SimpleNamespace(parity_length=None, parity_only=False), [5 + i % 100 for i in range(8000)], notes)
    assert (planned.device, len(planned.ids)) == (device, length), notes
