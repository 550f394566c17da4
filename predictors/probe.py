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

The same recursion runs on a model's measured sensitivity (:mod:`.spectrum`): x̂₀ = c_q(λ)·x per measured
curve, its exact flow from the integral of α·c over λ (:func:`spectrum_errors_padded`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from schedsearch.solvers import NoiseSchedule, Schedule
from schedsearch.solvers.plan import DensePlans, dense_plans
from schedsearch.solvers.step_table import StepTable

from .spectrum import ModelSpectrum

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
    return _relative_errors(plans, *_gaussian_law(plans))


def _gaussian_law(plans: DensePlans) -> tuple[np.ndarray, np.ndarray]:
    """x̂₀ = c·x on N(0, s²) data at the probe scales, and its exact flow x_t / x_t₀ = std(t) / std(t₀)."""
    var = np.asarray(PROBE_SCALES, dtype=np.float64) ** 2
    alpha, sigma = plans.alpha[..., None], plans.sigma[..., None]  # [B, N + 1, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = alpha * var / (alpha * alpha * var + sigma * sigma)  # [B, N + 1, scales]
    std = np.sqrt(alpha * alpha * var + sigma * sigma)
    return c, std / std[:, :1]


def spectrum_errors_padded(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule,
                           spectrum: ModelSpectrum) -> np.ndarray:
    """``[B, longest, spectrum.width]``: the relative error after each step on x̂₀ = c_q(λ)·x, one column per
    measured curve q (λ outside the measured range reads its nearest end). The exact flow of such a model is
    d(x/σ)/dλ = α c (x/σ), so x_t / x_t₀ = (σ_t / σ_t₀) exp(∫ α c dλ); at the data (σ = 0), where the curve
    says nothing more, x₀ is taken as the model's x̂₀ = c·x at the last measured point."""
    if not schedules:
        return np.zeros((0, 1, spectrum.width))
    plans = dense_plans(schedules, noise_schedule)
    return _relative_errors(plans, *_spectrum_law(plans, noise_schedule, spectrum))


def probe_columns(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule, probe: bool,
                  spectrum: ModelSpectrum | None, table: StepTable | None = None) -> np.ndarray:
    """``[B, longest, K]`` float32: the compressed errors on Gaussian data (with ``probe``), then on the model's
    spectrum (with one), from one compilation of the plans (``table``: their steps', if the caller has it)."""
    plans = dense_plans(schedules, noise_schedule, table)
    laws = ([_gaussian_law(plans)] if probe else []) + \
        ([] if spectrum is None else [_spectrum_law(plans, noise_schedule, spectrum)])
    c, exact = (np.concatenate(parts, -1) for parts in zip(*laws, strict=True))
    return _compress(_relative_errors(plans, c, exact)).astype(np.float32)  # one recursion for all the columns


def _spectrum_law(plans: DensePlans, noise_schedule: NoiseSchedule, spectrum: ModelSpectrum
                  ) -> tuple[np.ndarray, np.ndarray]:
    """x̂₀ = c_q(λ)·x per measured curve, and its exact flow (see :func:`spectrum_errors_padded`)."""
    lam_grid, curves = spectrum.arrays()
    fine, log_growth = _growth(lam_grid, curves, noise_schedule)
    with np.errstate(divide="ignore"):
        lam = np.log(plans.alpha / plans.sigma)  # [B, N + 1]; +inf at the data
    at_data = ~np.isfinite(lam)
    lam = np.clip(np.where(at_data, lam_grid[-1], lam), lam_grid[0], lam_grid[-1])
    c = np.stack([np.interp(lam, lam_grid, curves[:, q]) for q in range(spectrum.width)], -1)
    growth = np.stack([np.interp(lam, fine, log_growth[:, q]) for q in range(spectrum.width)], -1)
    sigma_end = float(np.asarray(noise_schedule.alpha_sigma([float(noise_schedule.t_of_lambda([lam_grid[-1]])[0])]))[1, 0])
    sigma = np.where(at_data, sigma_end, plans.sigma)[..., None]
    exact = sigma / sigma[:, :1] * np.exp(growth - growth[:, :1])
    c_end = np.where(np.abs(curves[-1]) < 1e-6, 1e-6, curves[-1])  # x₀ = c·x there: never exactly 0
    return c, np.where(at_data[..., None], exact * c_end, exact)


def _growth(lam: np.ndarray, curves: np.ndarray, noise_schedule: NoiseSchedule) -> tuple[np.ndarray, np.ndarray]:
    """A fine λ grid over the measured range and ∫ α c_q dλ from its start (trapezoids), per curve."""
    fine = np.linspace(lam[0], lam[-1], 4096)
    alpha = np.asarray(noise_schedule.alpha_sigma(noise_schedule.t_of_lambda(fine))[0], dtype=np.float64)
    integrand = alpha[:, None] * np.stack([np.interp(fine, lam, curves[:, q]) for q in range(curves.shape[1])], 1)
    steps = (integrand[1:] + integrand[:-1]) / 2.0 * np.diff(fine)[:, None]
    return fine, np.concatenate([np.zeros((1, curves.shape[1])), np.cumsum(steps, 0)])


def _relative_errors(plans: DensePlans, c: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """The sampler's recursion on the linear models x̂₀ = c·x, ε̂ = e·x (``c``: ``[B, N + 1, K]`` at every time of
    the plans, K models at once), from x = 1 at t₀: the relative error x / x_exact − 1 after each step
    (``exact``: ``[B, N + 1, K]``, x_exact(t) / x_exact(t₀)), padded; a diverging solve scores 1e6."""
    alpha, sigma = plans.alpha[..., None], plans.sigma[..., None]  # [B, N + 1, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(sigma > 0, (1.0 - alpha * c) / sigma, 0.0)  # σ = 0 only at the data, never evaluated
    c = c.copy()
    c[plans.analytic, 0] = 0.0  # the analytical first step: x̂₀ = 0 (the data mean)
    e[plans.analytic, 0] = 1.0 / plans.sigma[plans.analytic, 0, None]
    width = c.shape[-1]
    with np.errstate(all="ignore"):  # a diverging solve overflows: it scores the worst below
        count, steps = plans.ratio.shape
        seen = np.zeros((count, steps + 1, width))  # the state each point's (last) model call saw
        after = np.zeros((count, steps, width))
        x = x_prev = np.ones((count, width))
        for i in range(steps):
            seen[:, i] = x
            upto = slice(0, i + 1)  # the points seen so far: no update reads a later one
            if i > 0 and plans.corrected[:, i - 1].any():
                fix = plans.corrected[:, i - 1, None]
                weights = (plans.corrector_data[:, i - 1, upto, None] * c[:, upto]
                           + plans.corrector_noise[:, i - 1, upto, None] * e[:, upto])
                x = np.where(fix, plans.corrector_ratio[:, i - 1, None] * x_prev + (weights * seen[:, upto]).sum(1), x)
                seen[:, i] = np.where(plans.implicit[:, i - 1, None], x, seen[:, i])
            if i > 0:
                after[:, i - 1] = seen[:, i]
            x_prev = x
            weights = plans.data[:, i, upto, None] * c[:, upto] + plans.noise[:, i, upto, None] * e[:, upto]
            x = plans.ratio[:, i, None] * x + (weights * seen[:, upto]).sum(1)
            done = plans.lengths - 1 == i
            after[done, i] = x[done]
        r = after / exact[:, 1:] - 1.0
    return np.where(np.isfinite(r), r, 1e6)  # a diverging solve: the worst
