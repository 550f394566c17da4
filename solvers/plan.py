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

import numpy as np
import torch

from .coefficients import Node, Scalar, Update, exponential_update, ipndm_update, step_ratio
from .errors import ScheduleError
from .noise_schedules import NoiseSchedule
from .schedule import AnalyticFirstStep, Corrector, Derivative, Estimator, Prediction, Schedule, Step


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
        s = nodes[i]
        try:
            predictor = _predictor_update(step, i, node_map, relaxations.get(i), weight_offsets.get(i))
            corrector = _corrector_update(step, i, node_map, relaxations.get(i), corrector_offsets.get(i))
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


def _predictor_update(step: Step, i: int, nodes: Mapping[int, Node], rel: Sequence[Scalar] | None,
                      offsets: torch.Tensor | None = None) -> Update:
    """Step i's predictor, from the nodes of its points."""
    return _ordered(_predictor(step, i, nodes[i], nodes[i + 1], nodes, rel), i, step.points, offsets)


def _corrector_update(step: Step, i: int, nodes: Mapping[int, Node], rel: Sequence[Scalar] | None,
                      offsets: torch.Tensor | None = None) -> Update | None:
    """Step i's corrector (None without one), from the nodes of its points and of its end (i + 1)."""
    if step.corrector is Corrector.NONE:
        return None
    s, t = nodes[i], nodes[i + 1]
    if step.estimator is Estimator.FREE:
        corrector = Update(step_ratio(step.prediction, s, t), step.prediction,
                           tuple((i + j, w) for j, w in step.corrector_weights))
    else:
        corrector = exponential_update(step.prediction, step.estimator, step.derivatives, i, s, t,
                                       nodes, new_point=i + 1, relaxations=rel)
    return _ordered(corrector, i, (*step.points, 1), offsets)


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


@dataclass(frozen=True)
class DensePlans:
    """Many schedules' plans as arrays, padded to the longest (``lengths[b]`` steps are real).

    Step i of schedule b takes x_{i+1} = ``ratio[b, i]``·x_i + Σ_j ``data[b, i, j]``·x̂₀_j + ``noise[b, i, j]``·ε̂_j
    over the points j; where ``corrected[b, i]``, its corrector gives the corrected x_{i+1} from x_i the same way
    with the ``corrector_*`` arrays, and ``implicit[b, i]`` re-evaluates the model there. ``analytic[b]``: the
    first point is the analytical first step. α and σ are those of every node ``[B, N + 1]``.
    """

    lengths: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    ratio: np.ndarray
    data: np.ndarray
    noise: np.ndarray
    corrected: np.ndarray
    implicit: np.ndarray
    corrector_ratio: np.ndarray
    corrector_data: np.ndarray
    corrector_noise: np.ndarray
    analytic: np.ndarray


def dense_plans(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> DensePlans:
    """The plans of ``schedules`` (checked as :func:`compile_plan` checks them) in one vectorised pass.

    Steps with the same structure (prediction, order, estimator, corrector, derivative points) in any
    schedule and at any position share one call of the coefficient formulas on arrays, so thousands of
    schedules compile in about the time of a few hundred single plans; every coefficient equals
    :func:`compile_plan`'s to rounding.
    """
    count = len(schedules)
    lengths = np.array([s.num_steps for s in schedules], dtype=np.int64)
    n = int(lengths.max(initial=1))
    times = np.full((count, n + 1), float(noise_schedule.t_max))
    for b, s in enumerate(schedules):
        times[b, : lengths[b] + 1] = s.timesteps
    _check_all(schedules, times, lengths, noise_schedule)
    lam = np.asarray(noise_schedule.lambda_(times.ravel()), dtype=np.float64).reshape(times.shape)
    alpha, sigma = (np.asarray(v, dtype=np.float64).reshape(times.shape) for v in noise_schedule.alpha_sigma(times.ravel()))
    shape2, shape3 = (count, n), (count, n, n + 1)
    out = DensePlans(lengths, alpha, sigma, np.zeros(shape2), np.zeros(shape3), np.zeros(shape3),
                     np.zeros(shape2, dtype=bool), np.zeros(shape2, dtype=bool), np.zeros(shape2), np.zeros(shape3),
                     np.zeros(shape3), np.array([s.analytic_first_step is not None for s in schedules], dtype=bool))
    predictors: dict[tuple, list] = {}
    correctors: dict[tuple, list] = {}  # a corrector's formulas do not depend on the predictor's end or kind
    for b, s in enumerate(schedules):
        last = s.num_steps - 1
        for i, step in enumerate(s.steps):
            ders = step.derivatives
            fine = step.estimator in (Estimator.FREE, Estimator.IPNDM)
            structure = (step.prediction, step.order, step.estimator,
                         tuple(d.active_points for d in ders) if fine else tuple(len(d.active_points) for d in ders))
            member = (b, i, step, () if fine else tuple(p for d in ders for p in d.active_points),
                      tuple(d.relaxation for d in ders))
            predictors.setdefault((*structure, i == last and s.ends_at_data, step.weights), []).append(member)
            if step.corrector is not Corrector.NONE:
                correctors.setdefault((*structure, step.corrector_weights), []).append(member)
    for members in predictors.values():
        _fill_group(out, members, lam, schedules, noise_schedule, corrector=False)
    for members in correctors.values():
        _fill_group(out, members, lam, schedules, noise_schedule, corrector=True)
    return out


def _fill_group(out: DensePlans, members: list, lam: np.ndarray, schedules: Sequence[Schedule],
                noise_schedule: NoiseSchedule, corrector: bool) -> None:
    """One call of the coefficient formulas for the predictors (or the correctors) of steps of one structure;
    their weights scattered into ``out``.

    The step's points are numbered relative to its start (0; 1 is its end). Taylor and B(h) steps whose
    derivatives use different earlier points share the call: each active point becomes a slot (ids −1, −2, …)
    whose node is gathered per member, and weights of slots on the same point add up.
    """
    bs = np.array([m[0] for m in members])
    at = np.array([m[1] for m in members])
    step: Step = members[0][2]
    where: dict[int, np.ndarray | int] = {0: 0, 1: 1}  # point id → offset from the step's start, per member
    if members[0][3]:  # Taylor / B(h) derivatives: their points become slots
        offsets = np.array([m[3] for m in members])
        slots, ders = -1, []
        for d in step.derivatives:
            ders.append(Derivative(tuple(range(slots, slots - len(d.active_points), -1))))
            slots -= len(d.active_points)
        step = Step(step.prediction, step.order, tuple(ders), step.corrector, step.estimator)
        where.update({-1 - k: offsets[:, k] for k in range(offsets.shape[1])})
    else:
        where.update({p: p for p in step.points})
    nodes = {p: Node(lam[bs, at + off], out.alpha[bs, at + off], out.sigma[bs, at + off]) for p, off in where.items()}
    rel = [np.array([m[4][k] for m in members]) for k in range(len(step.derivatives))]
    try:
        update = _corrector_update(step, 0, nodes, rel) if corrector else _predictor_update(step, 0, nodes, rel)
    except ScheduleError:
        for b in sorted(set(bs.tolist())):
            compile_plan(schedules[b], noise_schedule)  # raises with the schedule's own step and message
        raise
    if not corrector:
        _scatter(update, bs, at, where, out.ratio, out.data, out.noise)
        return
    _scatter(update, bs, at, where, out.corrector_ratio, out.corrector_data, out.corrector_noise)
    out.corrected[bs, at] = True
    out.implicit[bs, at] = [m[2].corrector is Corrector.IMPLICIT for m in members]


def _check_all(schedules: Sequence[Schedule], times: np.ndarray, lengths: np.ndarray,
               noise_schedule: NoiseSchedule) -> None:
    """:meth:`Schedule.check_for` of every schedule: vectorised, with the offenders' own messages."""
    lo, hi = noise_schedule.t_min - 1e-9, noise_schedule.t_max + 1e-9
    rows = np.arange(len(schedules))
    last = times[rows, lengths]
    inner = times.copy()
    inner[rows, lengths] = noise_schedule.t_max  # the last time may also be the data time
    bad = ((inner < lo) | (inner > hi)).any(axis=1) | (((last < lo) | (last > hi)) & (last != noise_schedule.data_time))
    for b, s in enumerate(schedules):
        if bad[b] or s.time_domain != noise_schedule.time_domain or any(st.model_time is not None for st in s.steps):
            s.check_for(noise_schedule)


def _scatter(update: Update, bs: np.ndarray, at: np.ndarray, where: Mapping[int, np.ndarray | int],
             ratio: np.ndarray, data: np.ndarray, noise: np.ndarray) -> None:
    ratio[bs, at] = update.ratio
    target = data if update.prediction is Prediction.DATA else noise
    for p, w in update.weights:
        np.add.at(target, (bs, at, at + where[p]), w)  # slots on the same point add up
