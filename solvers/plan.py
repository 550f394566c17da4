"""Compile a :class:`Schedule` against a noise schedule into per-step linear updates.

All scalar work (λ, α, σ, φ-functions, finite-difference weights) happens here, once per
schedule, in float64; the executor only combines tensors with these coefficients.
:func:`compile_plan` gives plain floats; :func:`differentiable_plan` runs the same formulas on
float64 tensors, so that gradients reach the times, the relaxations and free weights
(learned refinement).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .coefficients import Node, Scalar, Update, exponential_update, ipndm_update, step_ratio
from .errors import ScheduleError
from .noise_schedules import NoiseSchedule
from .schedule import AnalyticFirstStep, Corrector, Estimator, Schedule, Step


@dataclass(frozen=True)
class StepPlan:
    """Point i is evaluated at ``time`` (the network's input time: t_i or the step's model time), with the
    conversion to predictions at ``node`` (t_i); ``predictor`` then gives x_{i+1}."""

    time: Scalar
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
    nodes = [Node(float(lam[j]), float(alpha[j]), float(sigma[j])) for j in range(len(times))]
    return _build(schedule, list(times), nodes)


def differentiable_plan(
    schedule: Schedule,
    noise_schedule: NoiseSchedule,
    times: torch.Tensor | None = None,
    relaxations: Mapping[int, Sequence[Scalar]] | None = None,
    weight_offsets: Mapping[int, torch.Tensor] | None = None,
    corrector_offsets: Mapping[int, torch.Tensor] | None = None,
    model_times: Mapping[int, Scalar] | None = None,
) -> Plan:
    """The plan of ``schedule`` as float64 tensors, differentiable in

    - ``times`` (N+1,): replaces the schedule's times (default: them);
    - ``relaxations[i]``: step i's derivative relaxations (default: the schedule's);
    - ``weight_offsets[i]``: added to step i's predictor weights, one per point of ``Step.points``;
    - ``corrector_offsets[i]``: added to step i's corrector weights (those points, then +1);
    - ``model_times[i]``: the network's input time at step i's point (default: the step's, else t_i).

    With no arguments it equals :func:`compile_plan` to rounding.
    """
    t = torch.as_tensor(schedule.timesteps, dtype=torch.float64) if times is None else times
    if t.shape != (len(schedule.timesteps),):
        raise ScheduleError(f"times: expected {len(schedule.timesteps)} values, got shape {tuple(t.shape)}")
    schedule.check_for(noise_schedule)
    lam = noise_schedule.lambda_torch(t)
    alpha, sigma = noise_schedule.alpha_sigma_torch(t)
    nodes = [Node(lam[j], alpha[j], sigma[j]) for j in range(t.numel())]
    return _build(schedule, list(t.unbind()), nodes, relaxations, weight_offsets, corrector_offsets, model_times)


def _build(
    schedule: Schedule,
    times: list[Scalar],
    nodes: list[Node],
    relaxations: Mapping[int, Sequence[Scalar]] | None = None,
    weight_offsets: Mapping[int, torch.Tensor] | None = None,
    corrector_offsets: Mapping[int, torch.Tensor] | None = None,
    model_times: Mapping[int, Scalar] | None = None,
) -> Plan:
    relaxations = relaxations or {}
    model_times = model_times or {}
    weight_offsets = weight_offsets or {}
    corrector_offsets = corrector_offsets or {}
    node_map = dict(enumerate(nodes))
    steps = []
    for i, step in enumerate(schedule.steps):
        s, t = nodes[i], nodes[i + 1]
        rel = relaxations.get(i)
        try:
            predictor = _ordered(_predictor(step, i, s, t, node_map, rel), i, step.points, weight_offsets.get(i))
            corrector = None
            if step.corrector is not Corrector.NONE:
                if step.estimator is Estimator.FREE:
                    corrector = Update(step_ratio(step.prediction, s, t), step.prediction,
                                       tuple((i + j, w) for j, w in step.corrector_weights))
                else:
                    corrector = exponential_update(step.prediction, step.estimator, step.derivatives, i, s, t,
                                                   node_map, new_point=i + 1, relaxations=rel)
                corrector = _ordered(corrector, i, (*step.points, 1), corrector_offsets.get(i))
        except ScheduleError as exc:
            raise ScheduleError(f"steps[{i}]: {exc}") from None
        own = times[i] if step.model_time is None else step.model_time
        steps.append(StepPlan(model_times.get(i, own), s, predictor, corrector, step.corrector))
    last_use = [0] * len(times)
    for i, sp in enumerate(steps):
        for update in (sp.predictor, sp.corrector):
            if update is not None:
                for j, _ in update.weights:
                    last_use[j] = max(last_use[j], i + 1 if update is sp.corrector else i)
    return Plan(tuple(steps), schedule.analytic_first_step, schedule.nfe, tuple(last_use))


def _ordered(update: Update, i: int, points: tuple[int, ...], offsets: torch.Tensor | None) -> Update:
    """``update`` with its weights in the order of ``points`` (offsets from i), plus ``offsets`` if given."""
    by_point = dict(update.weights)
    weights = tuple((i + j, by_point[i + j] + (0.0 if offsets is None else offsets[k])) for k, j in enumerate(points))
    return Update(update.ratio, update.prediction, weights)


def _predictor(step: Step, i: int, s: Node, t: Node, nodes: Mapping[int, Node],
               relaxations: Sequence[Scalar] | None) -> Update:
    """Step i's update from x_i to x_{i+1}; its weights are in the order of ``step.points``."""
    if step.estimator is Estimator.FREE:
        return Update(step_ratio(step.prediction, s, t), step.prediction, tuple((i + j, w) for j, w in step.weights))
    if step.estimator is Estimator.IPNDM:
        return ipndm_update(step.order, i, s, t)
    return exponential_update(step.prediction, step.estimator, step.derivatives, i, s, t, nodes,
                              relaxations=relaxations)
