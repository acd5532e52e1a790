"""yarn_cli: YaRN context extension of RoPE language models, done right for every runtime.

The Python API lives in ``yarn_cli.api`` (also reachable as ``yarn_cli.inspect``, ``yarn_cli.plan_extend``, ...);
it is imported on first use, so ``import yarn_cli`` stays cheap.
"""

__version__ = "0.1.0"

_API = ("inspect", "plan_extend", "apply_extend", "prepare_verify", "verify", "plan_finetune", "run_finetune", "finetune")


def __getattr__(name: str):
    if name in _API:
        from yarn_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'yarn_cli' has no attribute {name!r}")
