"""The Python API: the same operations as the CLI, returning objects with ``.to_json()`` instead of printing.

    from yarn_cli import api
    report = api.inspect("path/to/model", scale=4)
    plan = api.plan_extend("path/to/model", "path/to/out", scale=4)   # nothing written yet
    result = api.apply_extend(plan)                                   # OUT appears atomically
    verdict = api.verify(result.plan.output, lengths=[4096, 16384])   # needs torch
    tuned = api.tune("path/to/model", "path/to/out", scale=4)         # fits m to the model, writes the best
    tuned = api.finetune("path/to/model", "path/to/tuned", scale=4, data=["corpus.jsonl"])  # the [finetune] extra
    model = api.YarnLM(path="path/to/out", engine="native", variant="extended")  # an lm-eval model: the [eval] extra

Each verb takes its options object (``InspectRequest``, ``ExtendRequest``, ``VerifyRequest``, ``TuneRequest``,
``FinetuneRequest``: the command's flags, with the same defaults) or keyword arguments that change single fields:

    request = api.VerifyRequest(lengths=[16384], samples=4, engine="transformers")
    verdict = api.verify("path/to/out", request)

Errors are ``yarn_cli.errors.YarnError`` subclasses, each with a one-line message and an exit code.
"""

from yarn_cli.core.extend.options import ExtendRequest
from yarn_cli.core.finetune.options import FinetuneRequest
from yarn_cli.core.finetune.plan import Recipe
from yarn_cli.core.inspect.options import InspectRequest
from yarn_cli.core.options import EngineOptions
from yarn_cli.core.tune.options import TuneRequest
from yarn_cli.core.verify.options import VerifyRequest
from yarn_cli.usecases.extend import ExtendPlan, ExtendResult, apply_extend, plan_extend
from yarn_cli.usecases.finetune import FinetunePlan, FinetuneResult, finetune, plan_finetune, run_finetune
from yarn_cli.usecases.inspect import InspectReport, inspect
from yarn_cli.usecases.tune import TuneResult, tune
from yarn_cli.usecases.verify import VerifyReport, VerifyRun, prepare_verify, verify

__all__ = [
    "EngineOptions",
    "ExtendRequest",
    "FinetuneRequest",
    "InspectRequest",
    "TuneRequest",
    "VerifyRequest",
    "ExtendPlan",
    "ExtendResult",
    "FinetunePlan",
    "FinetuneResult",
    "InspectReport",
    "Recipe",
    "TuneResult",
    "VerifyReport",
    "VerifyRun",
    "apply_extend",
    "finetune",
    "inspect",
    "plan_extend",
    "plan_finetune",
    "prepare_verify",
    "run_finetune",
    "tune",
    "verify",
    "YarnLM",  # noqa: F822 (served by __getattr__ below, so that lm-eval is imported only when asked for)
]


def __getattr__(name: str):
    """``YarnLM`` (lm-eval's model interface over any engine) imports lm-eval, so only when asked for."""
    if name == "YarnLM":
        try:
            from yarn_cli.usecases.lm_eval_model import YarnLM
        except ImportError as exc:
            from yarn_cli.errors import InputError
            from yarn_cli.io.packages import needs

            raise InputError(needs("api.YarnLM", "lm-eval")) from exc
        return YarnLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
