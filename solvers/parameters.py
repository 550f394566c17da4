"""A schedule's continuous numbers as torch parameters, for learned refinement.

The structure (orders, predictions, estimators, correctors, active points) stays fixed;
what is learned:

- the **times**, through a monotone reparameterisation: t₀ stays (the noise is drawn there),
  the free times are t₀ − (t₀ − t_min)·cumsum(softmax(θ)), so they always decrease and stay
  in the model's range. The end time is free unless the schedule ends at the data (σ = 0);
- the **relaxation** of every estimated derivative (a factor on D_k, 1 = exact);
- **free weights** (optional): an offset on each predictor weight, initialised at 0, so the
  step starts as its analytic self. Exported, such a step becomes a ``free`` step whose weights
  are the analytic ones at the final times plus the learned offsets;
- **model times** (LD3's decoupled times): the time the network is told at each point after the
  first, t_i + w·g_i·tanh(θ_i) with g_i the gap to the nearer neighbouring time and w =
  ``MODEL_TIME_WINDOW``, so it stays between its neighbours; the solver's coefficients keep t_i.
  Exported as the steps' ``model_time``.

:meth:`ScheduleParameters.plan` gives the differentiable plan, :meth:`to_schedule` the
schedule the current values describe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .errors import ScheduleError
from .noise_schedules import NoiseSchedule
from .plan import Plan, differentiable_plan
from .coefficients import Update
from .schedule import Corrector, Derivative, Estimator, Schedule, Step


@dataclass(frozen=True)
class RefineTargets:
    """Which numbers refinement may change."""

    times: bool = True
    relaxations: bool = True
    free_weights: bool = True
    model_times: bool = True

    def __post_init__(self) -> None:
        if not (self.times or self.relaxations or self.free_weights or self.model_times):
            raise ScheduleError("refinement: nothing to learn (times, relaxations, free weights and model times all off)")


#: a learned model time stays within this share of the gap to the nearer neighbouring time
MODEL_TIME_WINDOW = 0.5
#: the model-time parameters' learning rate, as a share of the times'
MODEL_TIME_LR = 0.5


class ScheduleParameters(torch.nn.Module):
    """The learnable numbers of ``schedule`` on ``noise_schedule`` (float64 parameters)."""

    def __init__(self, schedule: Schedule, noise_schedule: NoiseSchedule, targets: RefineTargets = RefineTargets()):
        super().__init__()
        schedule.check_for(noise_schedule)
        self.schedule, self.noise_schedule, self.targets = schedule, noise_schedule, targets
        times = schedule.timesteps
        self.end_fixed = schedule.ends_at_data
        self.n_free = len(times) - 1 - (1 if self.end_fixed else 0)
        self.t_start = float(times[0])
        self.t_floor = float(noise_schedule.t_min)
        span = self.t_start - self.t_floor
        if self.n_free and span <= 0:
            raise ScheduleError(f"timesteps[0]: {self.t_start:g} leaves no room above the model's t_min")
        free = torch.tensor(times[1:1 + self.n_free], dtype=torch.float64)
        edges = torch.cat([torch.tensor([self.t_start], dtype=torch.float64), free,
                           torch.tensor([self.t_floor], dtype=torch.float64)])
        gaps = (edges[:-1] - edges[1:]).clamp_min(1e-9 * span)
        self.time_logits = torch.nn.Parameter(torch.log(gaps / gaps.sum()), requires_grad=targets.times and self.n_free > 0)
        self.relaxations = torch.nn.ParameterDict()
        self.weight_offsets = torch.nn.ParameterDict()
        self.corrector_offsets = torch.nn.ParameterDict()
        for i, step in enumerate(schedule.steps):
            if targets.relaxations and step.derivatives and step.estimator is not Estimator.IPNDM:
                self.relaxations[str(i)] = torch.nn.Parameter(
                    torch.tensor([d.relaxation for d in step.derivatives], dtype=torch.float64))
            if targets.free_weights:
                self.weight_offsets[str(i)] = torch.nn.Parameter(torch.zeros(len(step.points), dtype=torch.float64))
                if step.corrector is not Corrector.NONE:
                    self.corrector_offsets[str(i)] = torch.nn.Parameter(
                        torch.zeros(len(step.points) + 1, dtype=torch.float64))
        self.learn_model_times = targets.model_times and len(schedule.steps) > 1
        start = torch.zeros(max(len(schedule.steps) - 1, 0), dtype=torch.float64)
        if self.learn_model_times:  # a model time the schedule has: its offset in the window (at its edge if beyond)
            gaps = self._gaps(torch.tensor(times, dtype=torch.float64))
            for k, step in enumerate(schedule.steps[1:]):
                if step.model_time is not None:
                    share = (step.model_time - times[k + 1]) / (MODEL_TIME_WINDOW * float(gaps[k]))
                    start[k] = math.atanh(max(-0.999, min(0.999, share)))
        self.model_shift = torch.nn.Parameter(start, requires_grad=self.learn_model_times)

    def times(self) -> torch.Tensor:
        """The N+1 times the parameters describe (t₀ and, for data-ending schedules, t_N fixed)."""
        t = self.schedule.timesteps
        head = torch.tensor([self.t_start], dtype=torch.float64)
        if self.n_free == 0:
            return torch.tensor(t, dtype=torch.float64)
        fractions = torch.cumsum(torch.softmax(self.time_logits, dim=0), dim=0)[: self.n_free]
        free = self.t_start - (self.t_start - self.t_floor) * fractions
        parts = [head, free]
        if self.end_fixed:
            parts.append(torch.tensor([t[-1]], dtype=torch.float64))
        return torch.cat(parts)

    @staticmethod
    def _gaps(times: torch.Tensor) -> torch.Tensor:
        """For the points 1 … N−1: the gap to the nearer neighbouring time."""
        return torch.minimum(times[:-2] - times[1:-1], times[1:-1] - times[2:])

    def model_times(self, times: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """The learned network input times of points 1 … N−1 (empty unless model times are learned)."""
        if not self.learn_model_times:
            return {}
        t = self.times() if times is None else times
        window = MODEL_TIME_WINDOW * self._gaps(t.detach())
        shifted = t[1:-1] + window * torch.tanh(self.model_shift)
        return {k + 1: shifted[k] for k in range(shifted.numel())}

    def plan(self) -> Plan:
        """The differentiable plan at the current values."""
        relax = {int(i): list(r.unbind()) for i, r in self.relaxations.items()}
        offsets = {int(i): w for i, w in self.weight_offsets.items()}
        corrector = {int(i): w for i, w in self.corrector_offsets.items()}
        times = self.times()
        return differentiable_plan(self.schedule, self.noise_schedule, times, relax, offsets, corrector,
                                   self.model_times(times))

    @torch.no_grad()
    def to_schedule(self, **provenance: object) -> Schedule:
        """The schedule of the current values: learned times and relaxations, learned weights as ``free`` steps."""
        times = [float(t) for t in self.times()]
        if len(set(times)) != len(times):  # softmax gaps underflowed: the schedule would not be legal
            raise ScheduleError("refinement collapsed two times into one; lower the learning rate")
        steps = list(self.schedule.steps)
        for key, rel in self.relaxations.items():
            i = int(key)
            ders = tuple(Derivative(d.active_points, float(r)) for d, r in zip(steps[i].derivatives, rel))
            steps[i] = replace(steps[i], derivatives=ders)
        draft = replace(self.schedule, timesteps=tuple(times), steps=tuple(steps))
        if self.weight_offsets:
            plan = differentiable_plan(draft, self.noise_schedule)
            for key, offsets in self.weight_offsets.items():
                i = int(key)
                weights = _learned(plan.steps[i].predictor, i, offsets)
                corrector = plan.steps[i].corrector
                corrector_weights = () if corrector is None else _learned(corrector, i, self.corrector_offsets[key])
                steps[i] = Step(steps[i].prediction, steps[i].order, steps[i].derivatives, steps[i].corrector,
                                Estimator.FREE, weights, corrector_weights, steps[i].model_time)
        for i, model_time in self.model_times().items():  # written only where it differs from the point's own time
            steps[i] = replace(steps[i], model_time=None if float(model_time) == times[i] else float(model_time))
        merged = {**dict(self.schedule.provenance), **provenance}
        return Schedule(self.schedule.time_domain, tuple(times), tuple(steps), self.schedule.analytic_first_step,
                        self.schedule.guidance_scale, merged)

    def groups(self, lr_times: float, lr_coefficients: float) -> list[dict[str, object]]:
        """Optimiser parameter groups: the time logits and the coefficients at their own rates."""
        coefficients = [p for p in [*self.relaxations.values(), *self.weight_offsets.values(),
                                    *self.corrector_offsets.values()] if p.requires_grad]
        groups: list[dict[str, object]] = []
        if self.time_logits.requires_grad:
            groups.append({"params": [self.time_logits], "lr": lr_times})
        if coefficients:
            groups.append({"params": coefficients, "lr": lr_coefficients})
        if self.learn_model_times:
            groups.append({"params": [self.model_shift], "lr": lr_times * MODEL_TIME_LR})
        return groups


def _learned(update: Update, i: int, offsets: torch.Tensor) -> tuple[tuple[int, float], ...]:
    """An update's weights (analytic at the final times) plus the learned offsets, as (offset from i, weight)."""
    return tuple((j - i, float(w + d)) for (j, w), d in zip(update.weights, offsets))
