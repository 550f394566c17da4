"""Compile a :class:`Schedule` against a noise schedule into per-step linear updates.

All scalar work (λ, α, σ, φ-functions, finite-difference weights) happens here, once per
schedule, in float64; the executor only combines tensors with these coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

from .coefficients import Node, Update, exponential_update, ipndm_update
from .errors import ScheduleError
from .noise_schedules import NoiseSchedule
from .schedule import AnalyticFirstStep, Corrector, Estimator, Schedule


@dataclass(frozen=True)
class StepPlan:
    """Point i is evaluated at ``time``; ``predictor`` then gives x_{i+1}."""

    time: float
    node: Node
    predictor: Update
    corrector: Update | None
    corrector_kind: Corrector


@dataclass(frozen=True)
class Plan:
    steps: tuple[StepPlan, ...]
    analytic_first_step: AnalyticFirstStep | None
    nfe: int
    #: last step index whose update reads point j (so the executor can free it)
    last_use: tuple[int, ...]


def compile_plan(schedule: Schedule, noise_schedule: NoiseSchedule) -> Plan:
    """Check ``schedule`` against ``noise_schedule`` and precompute every coefficient."""
    schedule.check_for(noise_schedule)
    times = schedule.timesteps
    lam = noise_schedule.lambda_(list(times))
    alpha, sigma = noise_schedule.alpha_sigma(list(times))
    nodes = {j: Node(float(lam[j]), float(alpha[j]), float(sigma[j])) for j in range(len(times))}
    steps = []
    for i, step in enumerate(schedule.steps):
        s, t = nodes[i], nodes[i + 1]
        try:
            if step.estimator is Estimator.IPNDM:
                predictor = ipndm_update(step.order, i, s, t)
            else:
                predictor = exponential_update(
                    step.prediction, step.estimator, step.derivatives, i, s, t, nodes
                )
            corrector = None
            if step.corrector is not Corrector.NONE:
                corrector = exponential_update(
                    step.prediction, step.estimator, step.derivatives, i, s, t, nodes, new_point=i + 1
                )
        except ScheduleError as exc:
            raise ScheduleError(f"steps[{i}]: {exc}") from None
        steps.append(StepPlan(times[i], s, predictor, corrector, step.corrector))
    last_use = [0] * len(times)
    for i, sp in enumerate(steps):
        for update in (sp.predictor, sp.corrector):
            if update is not None:
                for j, _ in update.weights:
                    last_use[j] = max(last_use[j], i + 1 if update is sp.corrector else i)
    return Plan(tuple(steps), schedule.analytic_first_step, schedule.nfe, tuple(last_use))
