"""schedsearch: search solver schedules (timesteps + per-step solver decisions) for diffusion models.

This file is installed as the top-level ``schedsearch`` package (``pyproject.toml`` maps
the repository's ``solvers/``, ``search/``, ``storage/`` and ``predictors/`` folders to
``schedsearch.solvers``, ``schedsearch.search``, …). It re-exports the public API lazily,
so that ``import schedsearch.storage`` (or the command line's ``--help``) does not pay
for importing torch.

>>> import schedsearch
>>> model = schedsearch.load_model("builtin:gmm-ring")
>>> s = schedsearch.baseline("dpmpp_2m", nfe=5, model=model, grid="uniform_lambda")
>>> schedsearch.Schedule.from_json(s.to_json()) == s
True
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["AnalyticFirstStep", "Corrector", "Derivative", "DiffusionModel", "Estimator", "GaussianMixture",
         "ModelLoadError", "Prediction", "Schedule", "ScheduleError", "SolverError", "Step", "baseline",
         "compile_plan", "from_callable", "load_model", "sample", "with_prompts"],
        "schedsearch.solvers",
    ),
    **dict.fromkeys(["NewTrial", "StoreError", "TrialState", "TrialStore"], "schedsearch.storage"),
    **dict.fromkeys(["EvalResult", "Evaluator", "SampleEvaluator", "successive_halving"],
                    "schedsearch.search.evaluator"),
    "NoiseSet": "schedsearch.search.noise_set",
    "default_evaluator": "schedsearch.search.compare",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'schedsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from schedsearch.search.compare import default_evaluator
    from schedsearch.search.evaluator import EvalResult, Evaluator, SampleEvaluator, successive_halving
    from schedsearch.search.noise_set import NoiseSet
    from schedsearch.solvers import (
        AnalyticFirstStep,
        Corrector,
        Derivative,
        DiffusionModel,
        Estimator,
        GaussianMixture,
        ModelLoadError,
        Prediction,
        Schedule,
        ScheduleError,
        SolverError,
        Step,
        baseline,
        compile_plan,
        from_callable,
        load_model,
        sample,
        with_prompts,
    )
    from schedsearch.storage import NewTrial, StoreError, TrialState, TrialStore
