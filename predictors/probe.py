"""A schedule's error on Gaussian data: what its coefficients do, as features a predictor can read.

The schedule's plan runs the sampler's recursion (that of :func:`schedsearch.solvers.sampler.integrate`,
which the tests hold it to) on data x₀ ~ N(0, s²) for a few scales s, where everything is exact: x̂₀ is the
posterior mean α s² x / (α² s² + σ²), and the probability-flow ODE carries x_T = 1 to
x_t = std(t) / std(t₀) with std(t)² = α(t)² s² + σ(t)². Per step i, the relative error
of the state after the step (the state the next model call sees; the sampler's output after
the last step), one number per scale, signed and log-compressed: sign(r) · log(1 + 100 |r|) / 5.

On the digits search trials these rows lift a predictor's held-out Kendall τ from 0.63 to 0.70
(one network; ``benchmarks/predictor.py``, kinds ``pool:1`` and ``pool:1:noprobe``): the network
no longer has to learn from a few hundred trials how orders, estimators, relaxations and step
sizes combine into a solver's accuracy — the sampler computes it. Many schedules are probed at once
(plans compiled together, one vectorised recursion). Pure functions of the schedules and the noise schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from schedsearch.solvers import NoiseSchedule, Schedule
from schedsearch.solvers.plan import dense_plans

#: the data scales s probed (the data's spread per direction: digits pixels span [−1, 1])
PROBE_SCALES = (0.03, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
PROBE_FEATURES = len(PROBE_SCALES)


def _compress(r: np.ndarray) -> np.ndarray:
    return np.sign(r) * np.log1p(100.0 * np.abs(r)) / 5.0


def probe_features(schedule: Schedule, noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[num_steps, PROBE_FEATURES]`` float32: the compressed relative error after each step, per data scale."""
    return probe_features_many([schedule], noise_schedule)[0]


def probe_features_many(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> list[np.ndarray]:
    """:func:`probe_features` of every schedule, in one vectorised pass."""
    padded = probe_features_padded(schedules, noise_schedule)
    return [padded[b, : s.num_steps] for b, s in enumerate(schedules)]


def probe_features_padded(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[B, longest, PROBE_FEATURES]`` float32: :func:`probe_features` of every schedule, padded (the rows past a
    schedule's steps mean nothing)."""
    return _compress(_probe_errors_padded(schedules, noise_schedule)).astype(np.float32)


def probe_errors(schedule: Schedule, noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[num_steps, PROBE_FEATURES]``: the relative error x / x_exact − 1 after each step, per data scale."""
    return probe_errors_many([schedule], noise_schedule)[0]


def probe_errors_many(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> list[np.ndarray]:
    """:func:`probe_errors` of every schedule, in one vectorised pass."""
    padded = _probe_errors_padded(schedules, noise_schedule)
    return [padded[b, : s.num_steps] for b, s in enumerate(schedules)]


def _probe_errors_padded(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[B, longest, PROBE_FEATURES]``: :func:`probe_errors` of every schedule, padded. Their plans are compiled
    together (:func:`dense_plans`), then the sampler's recursion runs on all of them at once — on Gaussian data
    every model output is a multiple of its input, x̂₀ = c·x and ε̂ = e·x, so each state is one number per scale."""
    if not schedules:
        return np.zeros((0, 1, PROBE_FEATURES))
    plans = dense_plans(schedules, noise_schedule)
    var = np.asarray(PROBE_SCALES, dtype=np.float64) ** 2
    alpha, sigma = plans.alpha[..., None], plans.sigma[..., None]  # [B, N + 1, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = alpha * var / (alpha * alpha * var + sigma * sigma)  # [B, N + 1, scales]
        e = np.where(sigma > 0, (1.0 - alpha * c) / sigma, 0.0)  # σ = 0 only at the data, never evaluated
    c[plans.analytic, 0] = 0.0  # the analytical first step: x̂₀ = 0 (the data mean)
    e[plans.analytic, 0] = 1.0 / plans.sigma[plans.analytic, 0, None]
    with np.errstate(all="ignore"):  # a diverging solve overflows: it scores the worst below
        count, steps = plans.ratio.shape
        seen = np.zeros((count, steps + 1, len(var)))  # the state each point's (last) model call saw
        after = np.zeros((count, steps, len(var)))
        x = x_prev = np.ones((count, len(var)))
        for i in range(steps):
            seen[:, i] = x
            if i > 0 and plans.corrected[:, i - 1].any():
                fix = plans.corrected[:, i - 1, None]
                weights = plans.corrector_data[:, i - 1, :, None] * c + plans.corrector_noise[:, i - 1, :, None] * e
                x = np.where(fix, plans.corrector_ratio[:, i - 1, None] * x_prev + (weights * seen).sum(1), x)
                seen[:, i] = np.where(plans.implicit[:, i - 1, None], x, seen[:, i])
            if i > 0:
                after[:, i - 1] = seen[:, i]
            x_prev = x
            weights = plans.data[:, i, :, None] * c + plans.noise[:, i, :, None] * e
            x = plans.ratio[:, i, None] * x + (weights * seen).sum(1)
            done = plans.lengths - 1 == i
            after[done, i] = x[done]
        std = np.sqrt(alpha * alpha * var + sigma * sigma)  # the exact flow: x_t = std(t) / std(t₀)
        r = after / (std[:, 1:] / std[:, :1]) - 1.0
    return np.where(np.isfinite(r), r, 1e6)  # a diverging solve: the worst
