"""The unified sampling framework: noise schedules, model adapters, schedules, one executor.

>>> from schedsearch.solvers import load_model, baseline, sample, Schedule
>>> model = load_model("builtin:gmm-ring")
>>> s = baseline("dpmpp_2m", nfe=5, model=model, grid="uniform_lambda")
>>> Schedule.from_json(s.to_json()) == s
True
"""

from .baselines import BASELINES, baseline
from .coefficients import phi
from .errors import ModelLoadError, ScheduleError, SolverError
from .gmm import GaussianMixture
from .grids import GRIDS, model_times
from .loading import BUILTINS, DiffusersUNet, load_model
from .models import CountingNetwork, DiffusionModel, Parameterization, Predictions, from_callable
from .noise_schedules import (
    EDM,
    ContinuousVPCosine,
    ContinuousVPLinear,
    DiscreteVP,
    NoiseSchedule,
    RectifiedFlow,
    noise_schedule_from_spec,
)
from .pipelines import PIPELINES, with_prompts
from .plan import Plan, compile_plan
from .sampler import sample
from .schedule import (
    AnalyticFirstStep,
    Corrector,
    Derivative,
    Estimator,
    Prediction,
    Schedule,
    Step,
    default_derivatives,
)

__all__ = [
    "BASELINES", "BUILTINS", "EDM", "GRIDS", "AnalyticFirstStep", "ContinuousVPCosine", "ContinuousVPLinear",
    "Corrector", "CountingNetwork", "Derivative", "DiffusersUNet", "DiffusionModel", "DiscreteVP", "Estimator",
    "GaussianMixture", "ModelLoadError", "NoiseSchedule", "Parameterization", "Plan", "Prediction", "Predictions",
    "RectifiedFlow", "Schedule", "ScheduleError", "SolverError", "Step", "baseline", "compile_plan",
    "default_derivatives", "from_callable", "load_model", "model_times", "noise_schedule_from_spec", "phi", "sample",
    "SchedsearchScheduler", "PIPELINES", "with_prompts",
]


def __getattr__(name: str) -> object:
    """``SchedsearchScheduler`` is imported on first use: it pulls in diffusers' scheduler machinery."""
    if name == "SchedsearchScheduler":
        from .diffusers_scheduler import SchedsearchScheduler

        return SchedsearchScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
