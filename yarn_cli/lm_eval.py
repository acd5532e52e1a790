"""lm-evaluation-harness's own command line with yarn_cli's engines registered as ``--model yarn``:

    python -m yarn_cli.lm_eval --model yarn --model_args path=CKPT,engine=native,variant=extended --tasks T

Every lm-eval flag (``--include_path``, ``--num_fewshot``, ``--limit``, ``--output_path``, ``ls tasks``...)
works as it does for lm-eval's own models. Model args: path, engine (native, transformers, llama.cpp, vllm),
variant (extended, baseline, paper, m=X), device, max_length, max_gen_toks, add_bos_token, prefix_token_id,
original_context, and vLLM's tensor_parallel_size, pipeline_parallel_size, dtype, gpu_memory_utilization,
enforce_eager.
"""

from __future__ import annotations

import sys


def register() -> None:
    """Make ``--model yarn`` known to lm-eval (lazily: the engines load only when a run asks for one)."""
    from lm_eval.api.registry import model_registry

    if "yarn" not in model_registry:
        model_registry.register("yarn", target="yarn_cli.usecases.lm_eval_model:YarnLM")


def main() -> None:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        from yarn_cli.io.packages import needs

        print(needs("the lm-eval bridge", "lm-eval"), file=sys.stderr)
        raise SystemExit(2) from None
    from yarn_cli.errors import YarnError

    register()
    try:
        cli_evaluate()
    except YarnError as exc:  # bad model args or checkpoint: one line, as the yarn commands say it
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
