"""Scalar math of the exponential integrators (float64, no tensors).

Solving the diffusion ODE from s to t with h = λ_t − λ_s, in data-prediction form

    x_t = (σ_t/σ_s)·x_s + α_t · Σ_{k<n} h·φ_{k+1}(−h) · D_k,

and in noise-prediction form x_t = (α_t/α_s)·x_s − σ_t · Σ_{k<n} h·φ_{k+1}(h) · D_k, where
D_k ≈ h^k·(d/dλ)^k of x̂₀ (or ε̂) at λ_s and φ₁(z) = (eᶻ−1)/z, φ_{k+1}(z) = (φ_k(z) − 1/k!)/z
(Lu et al., DPM-Solver / DPM-Solver++; Zhao et al., UniPC; Liu et al., USF). Every update
is returned as a linear combination ``ratio·x_s + Σ_j w_j·y_j`` over model outputs y_j.

Every function takes plain floats (the executor's plan), 0-dim float64 tensors (the
differentiable plan of learned refinement) or float64 arrays with one entry per schedule (the
batched plans of :func:`~schedsearch.solvers.plan.dense_plans`): the same formulas, so all three
agree to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ScheduleError
from .schedule import Derivative, Estimator, Prediction

#: a coefficient: a float, a 0-dim float64 tensor that carries gradients, or a float64 array (a batch)
Scalar = float | torch.Tensor | np.ndarray


def _expm1(z: Scalar) -> Scalar:
    if isinstance(z, torch.Tensor):
        return torch.expm1(z)
    return np.expm1(z) if isinstance(z, np.ndarray) else math.expm1(z)


def _finite(z: Scalar) -> bool:
    if isinstance(z, torch.Tensor):
        return bool(torch.isfinite(z))
    return bool(np.isfinite(z).all()) if isinstance(z, np.ndarray) else math.isfinite(z)


def _any(condition: bool | np.ndarray | torch.Tensor) -> bool:
    """Whether a comparison holds anywhere (a batch: for any of its schedules)."""
    return bool(condition.any()) if isinstance(condition, np.ndarray) else bool(condition)

#: Adams–Bashforth weights used by iPNDM (Zhang & Chen, DEIS), newest point first.
IPNDM_WEIGHTS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def phi(k: int, z: Scalar) -> Scalar:
    """φ_k(z) = Σ_{j≥0} zʲ/(j+k)! for k ≥ 1 (series near 0, recurrence elsewhere)."""
    if isinstance(z, np.ndarray):
        return _phi_array(k, z)
    if abs(z) < 1.0:
        term, total = 1.0 / math.factorial(k), 0.0
        for j in range(40):
            total += term
            term *= z / (j + k + 1)
            if abs(term) < 1e-18 * abs(total):
                break
        return total + term
    value = _expm1(z) / z
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def _phi_array(k: int, z: np.ndarray) -> np.ndarray:
    """:func:`phi` of every entry of ``z``: the same recurrence, and the same series where |z| < 1."""
    small = np.abs(z) < 1.0
    zl = np.where(small, 1.0, z)
    value = np.expm1(zl) / zl
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / zl
    if small.any():
        zs = z[small]
        reach, terms = float(np.abs(zs).max()), 1  # the terms needed where |z| is largest (≥ 1/(k+1)! of the sum)
        bound = 1.0
        while terms < 40 and bound >= 1e-18:
            bound *= reach / (terms + k)
            terms += 1
        term, total = np.full(zs.shape, 1.0 / math.factorial(k)), np.zeros(zs.shape)
        for j in range(terms):
            total += term
            term = term * zs / (j + k + 1)
        value[small] = total + term
    return value


def derivative_weights(offsets: Sequence[Scalar], k: int) -> np.ndarray | torch.Tensor:
    """Weights a_m with D_k = Σ_m a_m·(y_m − y_s) for the polynomial through s and the points.

    ``offsets`` are r_m = (λ_m − λ_s)/h; D_k is h^k times the k-th derivative at λ_s. Offsets that are
    arrays (a batch of schedules) give weights ``[points, batch]``.
    """
    if any(isinstance(o, np.ndarray) for o in offsets):
        if len(offsets) == 1:  # the common fits in closed form: 1/r, and the 2×2 inverse's rows
            return 1.0 / np.asarray(offsets[0])[None]
        if len(offsets) == 2:
            r1, r2 = (np.asarray(o) for o in offsets)
            det = r1 * r2 * (r2 - r1) / 2.0
            return np.stack([r2 * r2 / 2.0, -r1 * r1 / 2.0] if k == 1 else [-r2, r1]) / det
        rb = np.stack(np.broadcast_arrays(*offsets), axis=-1)  # [batch, points]
        powers = np.arange(1, rb.shape[-1] + 1)
        fact = np.array([math.factorial(p) for p in powers], dtype=np.float64)
        return np.linalg.inv(rb[..., :, None] ** powers / fact)[..., k - 1, :].T
    if any(isinstance(o, torch.Tensor) for o in offsets):
        rt = torch.stack([torch.as_tensor(o, dtype=torch.float64) for o in offsets])
        pw = torch.arange(1, rt.numel() + 1, dtype=torch.float64)
        fact = torch.tensor([math.factorial(p) for p in range(1, rt.numel() + 1)], dtype=torch.float64)
        return torch.linalg.inv(rt[:, None] ** pw[None, :] / fact[None, :])[k - 1]
    r = np.asarray(offsets, dtype=np.float64)
    q = r.size
    powers = np.arange(1, q + 1)
    vander = r[:, None] ** powers[None, :] / np.array([math.factorial(p) for p in powers])[None, :]
    return np.linalg.inv(vander)[k - 1]


@dataclass(frozen=True)
class Node:
    """A point of the trajectory: λ, α, σ at one time."""

    lam: Scalar
    alpha: Scalar
    sigma: Scalar


@dataclass(frozen=True)
class Update:
    """x_new = ratio·x_s + Σ weight·y[point], with y the ``prediction`` of each point."""

    ratio: Scalar
    prediction: Prediction
    weights: tuple[tuple[int, Scalar], ...]


def step_ratio(prediction: Prediction, s: Node, t: Node) -> Scalar:
    """The exact factor on x_s of a step s → t: σ_t/σ_s (data prediction) or α_t/α_s (noise)."""
    if prediction is Prediction.DATA:
        if _any(s.sigma <= 0):
            raise ScheduleError("cannot integrate from σ = 0")
        return t.sigma / s.sigma
    if _any(s.alpha <= 0):
        raise ScheduleError("noise prediction cannot start where α = 0 (use data prediction)")
    return t.alpha / s.alpha


def expansion(prediction: Prediction, s: Node, t: Node) -> tuple[Scalar, Scalar, Scalar, Scalar]:
    """The Taylor expansion of a step s → t (σ_t > 0): h = λ_t − λ_s, the scale and argument of its
    φ-functions (α_t, −h for data prediction; −σ_t, h for noise) and c0, the first-order weight of y_s."""
    h = t.lam - s.lam
    if prediction is Prediction.DATA:
        return h, t.alpha, -h, -t.alpha * _expm1(-h)
    return h, -t.sigma, h, -(t.alpha * s.sigma / s.alpha - t.sigma)  # c0 = −σ_t(eʰ − 1), stable


def derivative_specs(derivatives: Sequence[Derivative], relaxations: Sequence[Scalar] | None = None,
                     new_point: int | None = None) -> list[tuple[tuple[int, ...], Scalar]]:
    """(points, relaxation) of each estimated derivative D_1, D_2, …, points as offsets from the step's start.

    With ``new_point`` (the corrector's, its offset) every estimate also uses that point and one more
    derivative is estimated from the highest one's points plus it (UniC).
    """
    rel = [d.relaxation for d in derivatives] if relaxations is None else list(relaxations)
    specs: list[tuple[tuple[int, ...], Scalar]] = [(d.active_points, r) for d, r in zip(derivatives, rel)]
    if new_point is not None:
        specs = [((*pts, new_point), r) for pts, r in specs]
        specs.append((specs[-1][0] if specs else (new_point,), 1.0))
    return specs


def derivative_coefficient(estimator: Estimator, k: int, points: int, scale: Scalar, h: Scalar,
                           z: Scalar) -> Scalar:
    """The factor on D_k in the update: h·φ_{k+1}(z)·scale, or B(h)'s for a first derivative from one point."""
    if k == 1 and points == 1 and estimator in (Estimator.BH1, Estimator.BH2):
        return scale * h * (0.5 if estimator is Estimator.BH1 else 0.5 * phi(1, z))
    return scale * h * phi(k + 1, z)


def exponential_update(
    prediction: Prediction,
    estimator: Estimator,
    derivatives: Sequence[Derivative],
    s_index: int,
    s: Node,
    t: Node,
    nodes: Mapping[int, Node],
    new_point: int | None = None,
    relaxations: Sequence[Scalar] | None = None,
) -> Update:
    """The update s → t of order ``len(derivatives) + 1`` (+1 with ``new_point``, the corrector).

    ``derivatives[k]`` names the earlier points (offsets from ``s_index``) for D_{k+1};
    with ``new_point`` (the index of the point at t) every estimate also uses that point
    and one more derivative is estimated from the highest one's points plus it (UniC).
    ``relaxations`` replace the derivatives' own (refinement learns them).
    """
    ratio = step_ratio(prediction, s, t)
    if _any(t.sigma == 0.0):  # exact limit h → ∞ of the first-order step to the data
        if derivatives or new_point is not None:
            raise ScheduleError("a step to the data (σ = 0) must be first order")
        return Update(ratio, prediction, ((s_index, data_step_weight(prediction, s, t)),))

    h, scale, z, c0 = expansion(prediction, s, t)
    weights: dict[int, Scalar] = {s_index: c0}
    specs = derivative_specs(derivatives, relaxations, None if new_point is None else new_point - s_index)
    for k, (offsets, relaxation) in enumerate(specs, start=1):
        points = [s_index + p for p in offsets]
        r = [(nodes[j].lam - s.lam) / h for j in points]
        if not all(_finite(o) for o in r):
            raise ScheduleError("a finite difference uses a point where λ is infinite (α = 0 or σ = 0)")
        a = derivative_weights(r, k)
        coeff = derivative_coefficient(estimator, k, len(points), scale, h, z) * relaxation
        for j, a_m in zip(points, a):
            weights[j] = weights.get(j, 0.0) + coeff * a_m
            weights[s_index] -= coeff * a_m
    return Update(ratio, prediction, tuple(weights.items()))


def data_step_weight(prediction: Prediction, s: Node, t: Node) -> Scalar:
    """The weight of y_s in the first-order step to the data (σ_t = 0), the exact limit h → ∞."""
    return t.alpha if prediction is Prediction.DATA else -(t.alpha * s.sigma / s.alpha)


def ipndm_update(order: int, s_index: int, s: Node, t: Node) -> Update:
    """iPNDM: u_t = u_s + (ρ_t − ρ_s)·Σ b_j ε̂_{s−j} in u = x/α, ρ = σ/α."""
    if _any(s.alpha <= 0):
        raise ScheduleError("noise prediction cannot start where α = 0 (use data prediction)")
    rho_s, rho_t = s.sigma / s.alpha, t.sigma / t.alpha
    step = t.alpha * (rho_t - rho_s)
    weights = tuple((s_index - j, step * b) for j, b in enumerate(IPNDM_WEIGHTS[order]))
    return Update(t.alpha / s.alpha, Prediction.NOISE, weights)
