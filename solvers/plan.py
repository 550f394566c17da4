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
from functools import lru_cache
from itertools import chain
from typing import NoReturn

import numpy as np
import torch

from .coefficients import (
    Node,
    Scalar,
    Update,
    data_step_weight,
    derivative_coefficient,
    derivative_specs,
    derivative_weights,
    expansion,
    exponential_update,
    ipndm_update,
    step_ratio,
)
from .errors import ScheduleError
from .noise_schedules import NoiseSchedule
from .schedule import AnalyticFirstStep, Corrector, Estimator, Prediction, Schedule, Step, StructureKey
from .step_table import StepTable, step_table, structure_derivatives


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


def dense_plans(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule, table: StepTable | None = None
                ) -> DensePlans:
    """The plans of ``schedules`` (checked as :func:`compile_plan` checks them) in one vectorised pass.

    A Taylor or B(h) update is its first-order term plus one term per estimated derivative
    (:func:`~schedsearch.solvers.coefficients.exponential_update`). Each kind of term is computed for every
    step of every schedule at once: the first-order terms by prediction, each derivative term by prediction,
    its index k, its number of points and (for D_1 from one point) the estimator — a few dozen calls of the
    coefficient formulas on arrays for any number of schedules. Free and iPNDM steps share a call per
    structure. Every coefficient equals :func:`compile_plan`'s to rounding. ``table``: the
    :func:`~.step_table.step_table` of the schedules' steps, if the caller has it already.
    """
    count = len(schedules)
    lengths = np.array([s.num_steps for s in schedules], dtype=np.int64)
    n = int(lengths.max(initial=1))
    times = np.full((count, n + 1), float(noise_schedule.t_max))
    times[np.arange(n + 1) < lengths[:, None] + 1] = np.fromiter(
        chain.from_iterable(s.timesteps for s in schedules), dtype=np.float64, count=int(lengths.sum()) + count)
    steps = [step for s in schedules for step in s.steps]
    table = step_table(steps) if table is None else table
    if len(table) != len(steps):
        raise ValueError(f"dense_plans: a table of {len(table)} steps for {len(steps)}")
    owner = np.repeat(np.arange(count), lengths)  # step → its schedule b, and its index i there
    _check_all(schedules, times, lengths, steps, owner, noise_schedule)
    lam = np.asarray(noise_schedule.lambda_(times.ravel()), dtype=np.float64).reshape(times.shape)
    alpha, sigma = (np.asarray(v, dtype=np.float64).reshape(times.shape) for v in noise_schedule.alpha_sigma(times.ravel()))
    shape2 = (count, n)
    weights = np.zeros((4, count, n, n + 1))  # _TARGETS: one array, so that a term's members may write to any
    out = DensePlans(lengths, alpha, sigma, np.zeros(shape2), weights[0], weights[1],
                     np.zeros(shape2, dtype=bool), np.zeros(shape2, dtype=bool), np.zeros(shape2), weights[2],
                     weights[3], np.array([s.analytic_first_step is not None for s in schedules], dtype=bool))
    index = np.arange(len(steps)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    to_data = (index == lengths[owner] - 1) & np.array([s.ends_at_data for s in schedules], dtype=bool)[owner]
    terms = _TermTable.of(table.structures)
    general = terms.general[table.structure]
    _fill_general(out, weights, terms, table, np.flatnonzero(general), owner, index, to_data, lam, schedules,
                  noise_schedule)
    others: dict[tuple, list] = {}  # free and iPNDM steps, by structure
    for g in np.flatnonzero(~general).tolist():
        step, b, i = steps[g], int(owner[g]), int(index[g])
        structure = int(table.structure[g])
        others.setdefault((structure, bool(to_data[g]), step.weights, False), []).append((b, i, step))
        if step.corrector is not Corrector.NONE:
            others.setdefault((structure, step.corrector_weights, True), []).append((b, i, step))
    for key, members in others.items():
        _fill_structure(out, members, lam, key[-1], schedules, noise_schedule)
    return out


def _fill_general(out: DensePlans, weights: np.ndarray, terms: _TermTable, table: StepTable, where: np.ndarray,
                  owner: np.ndarray, index: np.ndarray, to_data: np.ndarray, lam: np.ndarray,
                  schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> None:
    """The Taylor / B(h) steps ``where`` (in the flat list of all steps): first-order terms by prediction and by
    whether the step ends at the data, then each kind of derivative term (``terms`` by the steps' structures in
    ``table``, their relaxations from it), added to ``weights`` (out's four weight arrays, :data:`_TARGETS`)."""
    structure = table.structure[where]
    noise, corrected, implicit = terms.noise[structure], terms.corrected[structure], terms.implicit[structure]
    h_z_scale = np.zeros((3, *out.ratio.shape))
    for prediction in (Prediction.DATA, Prediction.NOISE):
        for end in (False, True):
            pick = (noise == (prediction is Prediction.NOISE)) & (to_data[where] == end)
            if pick.any():
                g = where[pick]
                _fill_first(out, h_z_scale, prediction, end, owner[g], index[g], corrected[pick], implicit[pick], lam,
                            schedules, noise_schedule)
    present = terms.codes[structure] >= 0  # [steps, most terms]: each step's terms, in order
    if not present.any():
        return
    term_step = np.broadcast_to(where[:, None], present.shape)[present]
    codes = terms.codes[structure][present]
    targets = terms.targets[structure][present]
    relaxations = np.take_along_axis(table.relaxations[where], terms.slots[structure], 1)[present]
    points = terms.points[structure][present]  # [terms, most points]
    for code in np.unique(codes).tolist():
        pick = np.flatnonzero(codes == code)
        g = term_step[pick]
        key = _decode_term(code)
        _fill_term(weights, h_z_scale, key, targets[pick], owner[g], index[g], points[pick, : key[-1]],
                   relaxations[pick], lam, schedules, noise_schedule)


_ESTIMATOR_CODES = (Estimator.TAYLOR, Estimator.BH1, Estimator.BH2)
_POINTS_RADIX = 1 << 20  # a derivative term's code: its kind · radix + its number of points
#: the weight arrays a term adds to, by index: (corrector, prediction)
_TARGETS = ((False, Prediction.DATA), (False, Prediction.NOISE), (True, Prediction.DATA), (True, Prediction.NOISE))


def _encode_term(k: int, estimator: Estimator, points: int) -> int:
    """A derivative term's kind (the formulas it takes), as one integer: its k, estimator and number of points."""
    return (_ESTIMATOR_CODES.index(estimator) * 64 + k) * _POINTS_RADIX + points


def _decode_term(code: int) -> tuple[int, Estimator, int]:
    kind, points = divmod(code, _POINTS_RADIX)
    estimator, k = divmod(kind, 64)
    return k, _ESTIMATOR_CODES[estimator], points


@dataclass(frozen=True)
class _TermTable:
    """Per structure (:attr:`~.schedule.Step.structure`): whether it is a Taylor / B(h) step (``general``; free
    and iPNDM steps are not), its prediction, corrector, and the derivative terms of its predictor (then its
    corrector), padded: each term's code (:func:`_encode_term`, which holds its number of points; −1 past the
    structure's terms), the weights it adds to (an index into :data:`_TARGETS`), the column of the step's relaxations it reads (derivative k reads column k − 1; the
    corrector's extra derivative the last column, 1.0), and its points (offsets from the step's start, 1 its
    end; padded with 0)."""

    general: np.ndarray
    noise: np.ndarray
    corrected: np.ndarray
    implicit: np.ndarray
    codes: np.ndarray
    targets: np.ndarray
    slots: np.ndarray
    points: np.ndarray

    @classmethod
    def of(cls, structures: Sequence[StructureKey]) -> _TermTable:
        rows = [_structure_terms(key) for key in structures]
        term_counts = np.fromiter((len(r[0]) for r in rows), dtype=np.int64, count=len(rows))
        present = np.arange(int(term_counts.max(initial=0))) < term_counts[:, None]  # [structures, most terms]
        codes = np.full(present.shape, -1, dtype=np.int64)
        codes[present] = np.fromiter(chain.from_iterable(r[0] for r in rows), dtype=np.int64)
        targets = np.zeros(present.shape, dtype=np.int64)
        targets[present] = np.fromiter(chain.from_iterable(r[1] for r in rows), dtype=np.int64)
        slots = np.zeros(present.shape, dtype=np.int64)
        slots[present] = np.fromiter(chain.from_iterable(r[2] for r in rows), dtype=np.int64)
        term_points = [p for r in rows for p in r[3]]  # every term's points, in the order of ``present``
        point_counts = np.fromiter(map(len, term_points), dtype=np.int64, count=len(term_points))
        has_point = np.arange(int(point_counts.max(initial=0))) < point_counts[:, None]
        flat = np.zeros(has_point.shape, dtype=np.int64)
        flat[has_point] = np.fromiter(chain.from_iterable(term_points), dtype=np.int64)
        points = np.zeros((*present.shape, has_point.shape[1]), dtype=np.int64)
        points[present] = flat
        general = np.array([key[2] not in (Estimator.FREE, Estimator.IPNDM) for key in structures], dtype=bool)
        corrected = np.array([key[3] is not Corrector.NONE for key in structures], dtype=bool)
        return cls(general, np.array([key[0] is Prediction.NOISE for key in structures], dtype=bool),
                   corrected & general, np.array([key[3] is Corrector.IMPLICIT for key in structures], dtype=bool),
                   codes, targets, slots, points)


@lru_cache(maxsize=1 << 12)
def _structure_terms(key: StructureKey
                     ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """The codes, targets, relaxation columns and points of a structure's derivative terms (none for free and
    iPNDM steps; memoised: a search space has a few hundred structures)."""
    prediction, _, estimator, corrector_kind, _ = key
    if estimator in (Estimator.FREE, Estimator.IPNDM):
        return (), (), (), ()
    derivatives = structure_derivatives(key)
    codes, targets, slots, points = [], [], [], []
    for corrector in (False, True) if corrector_kind is not Corrector.NONE else (False,):
        specs = derivative_specs(derivatives, new_point=1 if corrector else None)
        for k, (pts, _) in enumerate(specs, start=1):
            term_estimator = estimator if k == 1 and len(pts) == 1 else Estimator.TAYLOR
            codes.append(_encode_term(k, term_estimator, len(pts)))
            targets.append(_TARGETS.index((corrector, prediction)))
            slots.append(k - 1)  # past the step's derivatives (the corrector's extra one) the column reads 1.0
            points.append(pts)
    return tuple(codes), tuple(targets), tuple(slots), tuple(points)


def _refuse(bs: np.ndarray, schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> NoReturn:
    """A formula refused a batch: compile its schedules one by one, to raise with the offender's step and message."""
    for b in sorted(set(bs.tolist())):
        compile_plan(schedules[b], noise_schedule)
    raise AssertionError("a batched formula refused schedules that compile_plan accepts")  # pragma: no cover


def _fill_first(out: DensePlans, h_z_scale: np.ndarray, prediction: Prediction, to_data: bool, bs: np.ndarray,
                at: np.ndarray, corrected: np.ndarray, implicit: np.ndarray, lam: np.ndarray,
                schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> None:
    """Ratio and first-order weight of steps ``at`` of schedules ``bs`` (and of their correctors, where
    ``corrected``); their expansion kept for the derivative terms."""
    s = Node(lam[bs, at], out.alpha[bs, at], out.sigma[bs, at])
    t = Node(lam[bs, at + 1], out.alpha[bs, at + 1], out.sigma[bs, at + 1])
    try:
        ratio = step_ratio(prediction, s, t)
    except ScheduleError:
        _refuse(bs, schedules, noise_schedule)
    if to_data:
        c0 = data_step_weight(prediction, s, t)
    else:
        h, scale, z, c0 = expansion(prediction, s, t)
        h_z_scale[:, bs, at] = h, z, scale
    (out.data if prediction is Prediction.DATA else out.noise)[bs, at, at] += c0
    out.ratio[bs, at] = ratio
    cb, ca = bs[corrected], at[corrected]
    (out.corrector_data if prediction is Prediction.DATA else out.corrector_noise)[cb, ca, ca] += c0[corrected]
    out.corrector_ratio[cb, ca] = ratio[corrected]
    out.corrected[cb, ca] = True
    out.implicit[cb, ca] = implicit[corrected]


def _fill_term(weights: np.ndarray, h_z_scale: np.ndarray, key: tuple[int, Estimator, int], targets: np.ndarray,
               bs: np.ndarray, at: np.ndarray, offsets: np.ndarray, relaxations: np.ndarray, lam: np.ndarray,
               schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> None:
    """One kind of derivative term (``key``: k, estimator, points) of steps ``at`` of schedules ``bs``, from the
    points ``offsets`` [members, points] (from each step's start; 1 is its end), added to the weights of each
    member's target (``weights[targets]``: predictor or corrector, data or noise)."""
    k, estimator, _ = key
    h, z, scale = h_z_scale[:, bs, at]
    r = [(lam[bs, at + offsets[:, m]] - lam[bs, at]) / h for m in range(offsets.shape[1])]
    if not all(np.isfinite(o).all() for o in r):
        _refuse(bs, schedules, noise_schedule)
    a = derivative_weights(r, k)
    coeff = derivative_coefficient(estimator, k, len(r), scale, h, z) * relaxations
    for m in range(offsets.shape[1]):
        w = coeff * a[m]
        np.add.at(weights, (targets, bs, at, at + offsets[:, m]), w)  # terms and points on the same point add up
        np.add.at(weights, (targets, bs, at, at), -w)


def _fill_structure(out: DensePlans, members: list, lam: np.ndarray, corrector: bool, schedules: Sequence[Schedule],
                    noise_schedule: NoiseSchedule) -> None:
    """One call of the coefficient formulas for the predictors (or the correctors) of free or iPNDM steps of one
    structure; their weights scattered into ``out``."""
    bs = np.array([m[0] for m in members])
    at = np.array([m[1] for m in members])
    step: Step = members[0][2]
    nodes = {p: Node(lam[bs, at + p], out.alpha[bs, at + p], out.sigma[bs, at + p]) for p in (0, 1, *step.points)}
    try:
        update = _corrector_update(step, 0, nodes, None) if corrector else _predictor_update(step, 0, nodes, None)
    except ScheduleError:
        _refuse(bs, schedules, noise_schedule)
    if not corrector:
        _scatter(update, bs, at, out.ratio, out.data, out.noise)
        return
    _scatter(update, bs, at, out.corrector_ratio, out.corrector_data, out.corrector_noise)
    out.corrected[bs, at] = True
    out.implicit[bs, at] = [m[2].corrector is Corrector.IMPLICIT for m in members]


def _check_all(schedules: Sequence[Schedule], times: np.ndarray, lengths: np.ndarray, steps: Sequence[Step],
               owner: np.ndarray, noise_schedule: NoiseSchedule) -> None:
    """:meth:`Schedule.check_for` of every schedule (``steps``: all their steps, ``owner`` their schedules):
    vectorised, with the offenders' own messages."""
    lo, hi = noise_schedule.t_min - 1e-9, noise_schedule.t_max + 1e-9
    rows = np.arange(len(schedules))
    last = times[rows, lengths]
    inner = times.copy()
    inner[rows, lengths] = noise_schedule.t_max  # the last time may also be the data time
    bad = ((inner < lo) | (inner > hi)).any(axis=1) | (((last < lo) | (last > hi)) & (last != noise_schedule.data_time))
    bad[owner[[g for g, step in enumerate(steps) if step.model_time is not None]]] = True
    bad |= np.array([s.time_domain != noise_schedule.time_domain for s in schedules], dtype=bool)
    for b in np.flatnonzero(bad).tolist():
        schedules[b].check_for(noise_schedule)


def _scatter(update: Update, bs: np.ndarray, at: np.ndarray, ratio: np.ndarray, data: np.ndarray,
             noise: np.ndarray) -> None:
    ratio[bs, at] = update.ratio
    target = data if update.prediction is Prediction.DATA else noise
    for p, w in update.weights:
        np.add.at(target, (bs, at, at + p), w)
