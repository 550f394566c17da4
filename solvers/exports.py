"""A schedule in other tools' terms: k-diffusion/ComfyUI sigmas, diffusers' own schedulers.

``sigmas`` is the schedule's noise levels in the k-diffusion convention (σ/α for VP and
EDM models, the flow time for rectified flow), descending, ending in 0 when the schedule
ends at the data. ``diffusers_export`` says which of diffusers' schedulers reproduces the
schedule — with its settings and the ``timesteps=`` list — where the decisions are those
of one of its solvers throughout; otherwise it says why not, and the scheduler class of
this package (``SchedsearchScheduler``) is the way to run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .baselines import BASELINES
from .noise_schedules import DiscreteVP, NoiseSchedule
from .schedule import Corrector, Estimator, Schedule

_DPM = "DPMSolverMultistepScheduler"
_UNIPC = ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 2, "final_sigmas_type": "zero"})
#: baseline → (diffusers scheduler class, its settings); the baselines are defined as these schedulers' defaults:
#: data prediction (dpmsolver++) ends at the data, noise prediction (dpmsolver) at the smallest trained noise level
_DIFFUSERS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (_DPM, {"algorithm_type": "dpmsolver++", "solver_order": order, "final_sigmas_type": "zero"})
       for name, order in (("ddim", 1), ("dpmpp_2m", 2), ("dpmpp_3m", 3))},
    **{f"dpm_solver_{order}": (_DPM, {"algorithm_type": "dpmsolver", "solver_order": order,
                                      "final_sigmas_type": "sigma_min"}) for order in (1, 2, 3)},
    "unipc_bh2": _UNIPC,
    "unip_bh2": _UNIPC,  # with every corrector disabled (added per schedule)
}
_NOT_IN_DIFFUSERS = {
    "ipndm": "diffusers has no multistep iPNDM on a model's timesteps",
    "unipc_bh1": "diffusers' bh1 divides by zero on a final step to the data",
    "unip_bh1": "diffusers' bh1 divides by zero on a final step to the data",
}
SCHEDULER_HINT = ("run it with SchedsearchScheduler.from_schedule('best.json', pipe.scheduler.config) "
                  "(schedsearch.solvers)")


@dataclass(frozen=True)
class DiffusersExport:
    """How to run a schedule with diffusers' own schedulers (``scheduler`` None: no scheduler can)."""

    timesteps: list[float]
    solver: str | None = None
    scheduler: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    set_timesteps: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"timesteps": self.timesteps, "solver": self.solver, "scheduler": self.scheduler,
                "settings": self.settings, "set_timesteps": self.set_timesteps, "reason": self.reason,
                "fallback": SCHEDULER_HINT}

    def render(self) -> str:
        """Lines a user pastes into a diffusers script."""
        ts = _py(self.timesteps)
        if self.scheduler is None:
            return "\n".join([f"timesteps = {ts}", f"# no diffusers scheduler reproduces this schedule: {self.reason}",
                              f"# {SCHEDULER_HINT}"])
        args = ", ".join(f"{k}={_py(v)}" for k, v in self.settings.items())
        call = ", ".join(f"{k}={'timesteps' if k == 'timesteps' else _py(v)}" for k, v in self.set_timesteps.items())
        lines = [f"timesteps = {ts}",
                 f"# the schedule is diffusers' {self.scheduler} ({self.solver}) on these timesteps:",
                 f"from diffusers import {self.scheduler}",
                 f"pipe.scheduler = {self.scheduler}.from_config(pipe.scheduler.config, {args})"]
        if "timesteps" in self.set_timesteps:
            lines.append("images = pipe(..., timesteps=timesteps).images")
        else:
            lines.append(f"images = pipe(..., {call}).images  # these settings give exactly the timesteps above")
        return "\n".join(lines)


def _py(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def sigmas(schedule: Schedule, noise_schedule: NoiseSchedule) -> list[float]:
    """The schedule's times as k-diffusion / ComfyUI sigmas (descending; 0 at the data)."""
    schedule.check_for(noise_schedule)
    times = np.asarray(schedule.timesteps, dtype=np.float64)
    if noise_schedule.time_domain == "flow":
        out = times.copy()
    else:
        out = noise_schedule.rho(times)
    out[[noise_schedule.is_data_time(t) for t in schedule.timesteps]] = 0.0
    return [float(v) for v in out]


def _matching_baseline(schedule: Schedule) -> str | None:
    n = schedule.num_steps
    for name, (steps_of, to_data) in BASELINES.items():
        if to_data == schedule.ends_at_data and tuple(steps_of(n, to_data)) == schedule.steps:
            return name
    return None


def _describe_mix(schedule: Schedule) -> str:
    kinds = {(s.prediction.value, s.estimator.value, s.corrector.value) for s in schedule.steps}
    parts = [f"orders {[s.order for s in schedule.steps]}"]
    if len({k[0] for k in kinds}) > 1:
        parts.append("data and noise prediction mixed")
    if len({k[1] for k in kinds}) > 1:
        parts.append(f"estimators {sorted({k[1] for k in kinds})}")
    if any(s.corrector is Corrector.IMPLICIT for s in schedule.steps):
        parts.append("implicit correctors")
    if any(d.relaxation != 1.0 for s in schedule.steps for d in s.derivatives):
        parts.append("relaxed derivatives")
    return "its decisions are not those of one diffusers solver (" + "; ".join(parts) + ")"


def diffusers_export(schedule: Schedule, noise_schedule: NoiseSchedule) -> DiffusersExport:
    """Which diffusers scheduler, with which settings and timesteps, reproduces ``schedule``."""
    schedule.check_for(noise_schedule)
    calls = list(schedule.timesteps[:-1])
    if not isinstance(noise_schedule, DiscreteVP):
        return DiffusersExport(calls, reason=f"the model's times are {noise_schedule.time_domain}, not diffusers' "
                                             "discrete DDPM timesteps (use the sigmas export)")
    if schedule.analytic_first_step is not None:
        return DiffusersExport(calls, reason="it replaces the first model call by an analytical step")
    if any(step.estimator is Estimator.FREE for step in schedule.steps):
        return DiffusersExport(calls, reason="its steps carry learned weights (a refined schedule), which no "
                                             "diffusers scheduler has")
    if any(step.model_time is not None for step in schedule.steps):
        return DiffusersExport(calls, reason="its network is told learned times apart from the solver's (a refined "
                                             "schedule), which no diffusers scheduler does")
    name = _matching_baseline(schedule)
    if name is None:
        return DiffusersExport(calls, reason=_describe_mix(schedule))
    if name not in _DIFFUSERS:
        return DiffusersExport(calls, solver=name, reason=f"its decisions are {name}'s: {_NOT_IN_DIFFUSERS[name]}")
    scheduler, settings = _DIFFUSERS[name]
    if not schedule.ends_at_data and schedule.timesteps[-1] != noise_schedule.t_min:
        return DiffusersExport(calls, solver=name, reason=f"it ends at t = {schedule.timesteps[-1]:g}; diffusers "
                                                           "ends at the data or at t = 0")
    settings = dict(settings)
    if name.startswith("unip_"):
        settings["disable_corrector"] = list(range(len(calls)))
    if scheduler == _DPM:
        if not all(float(t).is_integer() for t in calls):
            return DiffusersExport(calls, solver=name, reason="its timesteps are not integers (diffusers' "
                                                              "schedulers truncate custom timesteps)")
        ints = [float(int(t)) for t in calls]
        return DiffusersExport(ints, name, scheduler, settings, {"timesteps": [int(t) for t in calls]})
    spacing = _unipc_spacing(noise_schedule, calls, settings)  # UniPC takes no custom timesteps for DDPM models
    if spacing is None:
        return DiffusersExport(calls, solver=name, reason="UniPCMultistepScheduler takes no custom timesteps for "
                                                          "this model, and these are none of its spacings")
    settings["timestep_spacing"] = spacing
    return DiffusersExport(calls, name, scheduler, settings, {"num_inference_steps": len(calls)})


def _unipc_spacing(noise_schedule: DiscreteVP, calls: list[float], settings: dict[str, Any]) -> str | None:
    import diffusers

    for spacing in ("linspace", "leading", "trailing"):
        sched = diffusers.UniPCMultistepScheduler(**dict(noise_schedule.config), **settings, timestep_spacing=spacing)
        sched.set_timesteps(len(calls))
        if [float(t) for t in sched.timesteps.tolist()] == [float(t) for t in calls]:
            return spacing
    return None
