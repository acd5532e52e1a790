"""The YaRN recipe end to end, small enough for a CPU: train a tiny model at L = 256, extend it x4 with
`yarn extend`, then run a short `yarn finetune` at 1,024 tokens; perplexity at both lengths, before and after.

    python examples/finetune_demo.py [WORKDIR]      # a few minutes on 2 cores

The tiny model (4 layers, hidden 128, a 2,048-token byte-level BPE vocabulary trained here on the same text)
is pretrained from scratch on 90% of Python's documentation topics; perplexity is scored on the other 10%,
which no run trains on. The fine-tune uses a
higher learning rate than the paper's 2e-5, which is tuned for 7B models that already know language.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from yarn_cli import api
from yarn_cli.core.finetune.plan import Recipe
from yarn_cli.io.corpus import default_documents
from yarn_cli.usecases.finetune import finetune

L = 256


def write_texts(work: Path) -> tuple[Path, Path]:
    docs = default_documents()
    cut = len(docs) * 9 // 10
    train, held_out = work / "train.txt", work / "held_out.txt"
    train.write_text("\n\n".join(docs[:cut]), encoding="utf-8")
    held_out.write_text("\n\n".join(docs[cut:]), encoding="utf-8")
    return train, held_out


def train_tokenizer(train_text: Path):
    """A small byte-level BPE vocabulary: a 49k-entry one would spend most of a tiny model's compute on logits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train([str(train_text)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def pretrain(work: Path, train_text: Path) -> Path:
    """A tiny llama trained from scratch at L tokens: the "pretrained model" of this demo."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Trainer, TrainingArguments

    from yarn_cli.training.trainer import Windows, pack

    folder = work / "tiny"
    if (folder / "config.json").exists():
        return folder
    tokenizer = train_tokenizer(train_text)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=L,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    windows, _ = pack(tokenizer, [train_text.read_text(encoding="utf-8")], L)
    args = TrainingArguments(
        output_dir=str(work / "pretrain-checkpoints"),
        max_steps=300,
        learning_rate=3e-3,
        warmup_steps=30,
        per_device_train_batch_size=16,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=100,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=Windows(windows)).train()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def perplexity(model: Path, held_out: Path) -> dict[str, dict[str, float]]:
    report = api.verify(
        model, lengths=[L, 4 * L], depths=[0.5], trials=3, text=held_out, ppl_windows=8, min_accuracy=0.0, ppl_margin=10.0, device="cpu"
    ).to_json()
    return {"perplexity": report["perplexity"], "passkey": report["accuracy"]}


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "finetune-demo").resolve()
    work.mkdir(exist_ok=True)
    train_text, held_out = write_texts(work)
    tiny = pretrain(work, train_text)
    extended = work / "tiny-yarn4x"
    if not extended.exists():
        api.apply_extend(api.plan_extend(tiny, extended, scale=4))
    tuned = work / "tiny-yarn4x-ft"
    if not tuned.exists():
        result = finetune(extended, tuned, data=[train_text], recipe=Recipe(steps=60, lr=1e-3, warmup=5, batch_size=4, grad_accum=1))
        print(f"fine-tune: {result.steps} steps, {result.tokens:,} tokens, {result.seconds:.0f} s")
    before, after = perplexity(extended, held_out), perplexity(tuned, held_out)
    rows = [
        ("unextended (same weights, no scaling)", before["perplexity"]["baseline"], before["passkey"]["baseline"]),
        ("yarn x4, static (yarn extend)", before["perplexity"]["extended"], before["passkey"]["extended"]),
        ("yarn x4 + 60-step yarn finetune", after["perplexity"]["extended"], after["passkey"]["extended"]),
    ]
    print(f"| model | ppl at {L} | ppl at {4 * L} | passkey at {L} | passkey at {4 * L} |")
    print("| --- | --- | --- | --- | --- |")
    for name, ppl, passkey in rows:
        print(
            f"| {name} | {ppl.get(str(L), float('nan')):.1f} | {ppl.get(str(4 * L), float('nan')):.1f} | "
            f"{passkey.get(str(L), 0):.0%} | {passkey.get(str(4 * L), 0):.0%} |"
        )


if __name__ == "__main__":
    main()
