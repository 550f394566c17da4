"""``SchedsearchScheduler``: any schedule JSON inside an unmodified diffusers pipeline loop.

    pipe.scheduler = SchedsearchScheduler.from_schedule("best.json", pipe.scheduler.config)
    images = pipe(num_inference_steps=pipe.scheduler.num_inference_steps).images

A pipeline calls the model once per entry of ``scheduler.timesteps`` and hands each
output to :meth:`SchedsearchScheduler.step`, which runs the same compiled plan as
:func:`solvers.sample` one model call at a time: the point's predictions, the pseudo
(UniC) corrector of the previous step with them, then the step's predictor. A step
followed by an *implicit* corrector lists its end time twice (the pipeline's second
call evaluates the corrected point), so ``len(timesteps)`` is the schedule's NFE. An
analytical first step cannot skip the call the pipeline makes at t₀: its output is
discarded, and the pipeline makes NFE + 1 calls. A refined schedule whose steps carry model
times lists those: the pipeline tells the network the learned time, the solver steps between
the schedule's own times.

The noise schedule comes from the pipeline's scheduler config (discrete DDPM betas, as
``load_model`` reads them), the model's output type from its ``prediction_type``. The
schedule is kept in the scheduler's config, so ``save_pretrained``/``from_pretrained``
(of the scheduler or of the whole pipeline) keep it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from .errors import ScheduleError, SolverError
from .models import Parameterization, Predictions, analytic_predictions, convert_output
from .noise_schedules import DiscreteVP
from .plan import Plan, compile_plan
from .sampler import advance, correct
from .schedule import Corrector, Schedule

#: tolerance when matching a pipeline's timestep to the schedule's (timesteps travel as float32)
_TIME_TOL = 1e-3


@dataclass(frozen=True)
class _Call:
    """One model call of the pipeline loop: point ``index``'s evaluation at ``time``.

    ``kind``: ``point`` (the first evaluation at the point: corrects the previous step,
    then runs this step's predictor unless an implicit corrector asks for a second call),
    ``recheck`` (the implicit corrector's evaluation of the corrected point) or
    ``analytic`` (the discarded call of an analytical first step).
    """

    index: int
    time: float
    kind: str


def _calls(schedule: Schedule) -> tuple[_Call, ...]:
    out = []
    for i in range(schedule.num_steps):
        own = schedule.steps[i].model_time
        t = schedule.timesteps[i] if own is None else own  # the time the network is told
        if i == 0 and schedule.analytic_first_step is not None:
            out.append(_Call(0, t, "analytic"))
            continue
        out.append(_Call(i, t, "point"))
        if i > 0 and schedule.steps[i - 1].corrector is Corrector.IMPLICIT:
            out.append(_Call(i, t, "recheck"))
    return tuple(out)


def _as_schedule(schedule: Schedule | Mapping[str, Any] | str | Path) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, Mapping):
        return Schedule.from_dict(dict(schedule))
    text = str(schedule)
    if text.lstrip().startswith("{"):
        return Schedule.from_json(text)
    path = Path(text).expanduser()
    try:
        return Schedule.from_json(path.read_text())
    except OSError as exc:
        raise ScheduleError(f"schedule: cannot read {path}: {exc.strerror or exc}") from None


class SchedsearchScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """A diffusers scheduler that runs one schedsearch schedule (see the module docstring)."""

    config_name = "scheduler_config.json"
    order = 1
    _compatibles: ClassVar[list[str]] = []

    @register_to_config
    def __init__(
        self,
        schedule: dict[str, Any] | None = None,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "epsilon",
        data_mean: float | list[Any] | None = None,
    ) -> None:
        if schedule is None:
            raise ScheduleError("SchedsearchScheduler: no schedule; build it with "
                                "SchedsearchScheduler.from_schedule(path_or_schedule, pipe.scheduler.config)")
        self.schedule = _as_schedule(schedule)
        if self.schedule.time_domain != DiscreteVP.time_domain:
            raise ScheduleError(f"time_domain: SchedsearchScheduler runs discrete_vp schedules (diffusers DDPM betas), "
                                f"this one is {self.schedule.time_domain!r}")
        self.noise_schedule = DiscreteVP.from_config({
            "num_train_timesteps": num_train_timesteps, "beta_start": beta_start, "beta_end": beta_end,
            "beta_schedule": beta_schedule, "trained_betas": trained_betas})
        self.parameterization = Parameterization.from_diffusers(prediction_type)
        if self.parameterization not in (Parameterization.EPS, Parameterization.X0, Parameterization.V):
            raise SolverError(f"prediction_type: {prediction_type!r} is not a DDPM-style output")
        self.plan: Plan = compile_plan(self.schedule, self.noise_schedule)
        first = self.schedule.analytic_first_step
        if first is not None and first.value == "mean" and data_mean is None:
            raise ScheduleError("analytic_first_step: 'mean' needs the model's data_mean "
                                "(pass data_mean=... to from_schedule)")
        self.calls = _calls(self.schedule)
        self.init_noise_sigma = 1.0  # x at t₀ is the pipeline's standard normal noise (VP)
        self.num_inference_steps = len(self.calls)
        self.timesteps = self._timesteps_tensor("cpu")
        self._reset()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_schedule(
        cls,
        schedule: Schedule | Mapping[str, Any] | str | Path,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> SchedsearchScheduler:
        """The scheduler for ``schedule`` (a :class:`Schedule`, its dict, JSON text or a JSON file)
        on the noise schedule and prediction type of a pipeline's scheduler ``config``."""
        data = _as_schedule(schedule).to_dict()
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "schedule"}
        # the pipeline scheduler's other settings (spacing, clipping, …) have no meaning here
        kept = {k: v for k, v in dict(config or {}).items() if k in known}
        return cls(schedule=data, **{**kept, **kwargs})

    # -- what pipelines call ------------------------------------------------------------------

    def _timesteps_tensor(self, device: str | torch.device | None) -> torch.Tensor:
        times = [c.time for c in self.calls]
        if all(float(t).is_integer() for t in times):
            return torch.tensor([int(t) for t in times], dtype=torch.int64, device=device)
        return torch.tensor(times, dtype=torch.float32, device=device)

    def _reset(self) -> None:
        self._index: int | None = None
        self._begin_index: int | None = None
        self._points: dict[int, Predictions] = {}
        self._x_prev: torch.Tensor | None = None
        self._state: torch.Tensor | None = None  # full-precision copy of what step() last returned
        self._returned: torch.Tensor | None = None

    @property
    def step_index(self) -> int | None:
        return self._index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | list[float] | None = None,
        **unused: Any,
    ) -> None:
        """Check the pipeline's request against the schedule and start a new loop.

        ``num_inference_steps`` must equal the schedule's model calls; ``timesteps`` (as
        pipelines pass them through ``retrieve_timesteps``) must be the schedule's own."""
        expected = [c.time for c in self.calls]
        if timesteps is not None:
            given = [float(t) for t in (timesteps.tolist() if hasattr(timesteps, "tolist") else timesteps)]
            if len(given) != len(expected) or any(abs(a - b) > _TIME_TOL for a, b in zip(given, expected, strict=False)):
                raise ValueError(f"timesteps: {given} are not this schedule's model-call times {expected}")
        elif num_inference_steps is not None and int(num_inference_steps) != len(expected):
            raise ValueError(f"num_inference_steps: this schedule makes {len(expected)} model calls "
                             f"(NFE {self.schedule.nfe}); pass num_inference_steps={len(expected)}")
        self.timesteps = self._timesteps_tensor(device)
        self._reset()

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample  # the model sees x itself (VP)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = α(t)·x₀ + σ(t)·ε (for image-to-image pipelines)."""
        t = np.atleast_1d(torch.as_tensor(timesteps).detach().to("cpu", torch.float64).numpy())
        alpha, sigma = self.noise_schedule.alpha_sigma(t)
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        a = torch.as_tensor(alpha, dtype=original_samples.dtype, device=original_samples.device).reshape(shape)
        s = torch.as_tensor(sigma, dtype=original_samples.dtype, device=original_samples.device).reshape(shape)
        return a * original_samples + s * noise

    def _locate(self, timestep: Any) -> int:
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        for k, call in enumerate(self.calls):
            if abs(call.time - t) <= _TIME_TOL:
                return k
        raise ValueError(f"timestep {t:g} is not one of this schedule's times {[c.time for c in self.calls]}")

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **unused: Any,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Consume the model's output at ``timestep`` and return the sample for the next call."""
        if self._index is None:
            self._index = self._begin_index if self._begin_index is not None else self._locate(timestep)
        if self._index >= len(self.calls):
            raise ValueError(f"step: the schedule's {len(self.calls)} model calls are used up; call set_timesteps again")
        call = self.calls[self._index]
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        if abs(t - call.time) > _TIME_TOL:
            raise ValueError(f"step: expected timestep {call.time:g} (model call {self._index}), got {t:g}")
        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x = self._state if (self._returned is not None and sample is self._returned) else sample.to(dtype)
        i, sp = call.index, self.plan.steps[call.index]
        alpha, sigma = sp.node.alpha, sp.node.sigma
        if call.kind == "analytic":
            pred = analytic_predictions(x, alpha, sigma, self.plan.analytic_first_step.value,  # type: ignore[union-attr]
                                        self.config.data_mean)
        else:
            pred = convert_output(self.parameterization, model_output.to(x.dtype), x, alpha, sigma)
        if call.kind == "point":
            corrected = correct(self.plan, i, pred, self._x_prev, self._points)  # type: ignore[arg-type]
            if corrected is not None:
                x = corrected
                if self.plan.steps[i - 1].corrector_kind is Corrector.IMPLICIT:  # the next call evaluates it
                    return self._emit(x, model_output.dtype, return_dict)
        self._x_prev = x
        return self._emit(advance(self.plan, i, pred, x, self._points), model_output.dtype, return_dict)

    def _emit(self, x: torch.Tensor, dtype: torch.dtype, return_dict: bool) -> SchedulerOutput | tuple[torch.Tensor]:
        self._index = (self._index or 0) + 1
        self._state = x
        out = x if x.dtype == dtype else x.to(dtype)
        self._returned = out
        return SchedulerOutput(prev_sample=out) if return_dict else (out,)

    def __len__(self) -> int:
        return int(self.config.num_train_timesteps)

    def __repr__(self) -> str:
        return (f"SchedsearchScheduler(nfe={self.schedule.nfe}, calls={len(self.calls)}, "
                f"timesteps={json.dumps([c.time for c in self.calls])})")
