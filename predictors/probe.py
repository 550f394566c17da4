"""A schedule's error on Gaussian data: what its coefficients do, as features a predictor can read.

The schedule runs through the real sampler (:func:`schedsearch.solvers.sampler.integrate`) on
data x₀ ~ N(0, s²) for a few scales s, where everything is exact: the model's x̂₀ is the
posterior mean α s² x / (α² s² + σ²), and the probability-flow ODE carries x_T = 1 to
x_t = std(t) / std(t₀) with std(t)² = α(t)² s² + σ(t)². Per step i, the relative error
of the state after the step (the state the next model call sees; the sampler's output after
the last step), one number per scale, signed and log-compressed: sign(r) · log(1 + 100 |r|) / 5.

On the digits search trials these rows lift a predictor's held-out Kendall τ from 0.62 to 0.69
(one network; ``benchmarks/predictor.py``, kinds ``pool:1`` and ``pool:1:noprobe``): the network
no longer has to learn from a few hundred trials how orders, estimators, relaxations and step
sizes combine into a solver's accuracy — the sampler computes it. Pure functions of the schedule
and the noise schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from schedsearch.solvers import NoiseSchedule, Schedule, compile_plan
from schedsearch.solvers.models import Predictions, analytic_predictions
from schedsearch.solvers.sampler import integrate

#: the data scales s probed (the data's spread per direction: digits pixels span [−1, 1])
PROBE_SCALES = (0.03, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
PROBE_FEATURES = len(PROBE_SCALES)


class _GaussianData:
    """The exact denoiser of N(0, s²) data, one sample per scale; remembers the state of every call."""

    sample_shape = (1,)
    device = torch.device("cpu")
    state_dtype = torch.float64

    def __init__(self) -> None:
        self.var = torch.tensor(PROBE_SCALES, dtype=torch.float64).unsqueeze(1) ** 2
        self.states: dict[float, torch.Tensor] = {}  # by α(t_i): the sampler passes each node's own α

    def predict(self, x: torch.Tensor, t: float, alpha: float, sigma: float, cond: Any = None,
                guidance_scale: float | None = None) -> Predictions:
        self.states[float(alpha)] = x.clone()  # an implicit corrector's second call replaces the first
        x0 = alpha * self.var * x / (alpha * alpha * self.var + sigma * sigma)
        return Predictions(x0, (x - alpha * x0) / sigma)

    def analytic(self, x: torch.Tensor, alpha: float, sigma: float, kind: str) -> Predictions:
        return analytic_predictions(x, alpha, sigma, kind, 0.0)


def _compress(r: np.ndarray) -> np.ndarray:
    return np.sign(r) * np.log1p(100.0 * np.abs(r)) / 5.0


def probe_features(schedule: Schedule, noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[num_steps, PROBE_FEATURES]`` float32: the compressed relative error after each step, per data scale."""
    return _compress(probe_errors(schedule, noise_schedule)).astype(np.float32)


def probe_errors(schedule: Schedule, noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[num_steps, PROBE_FEATURES]``: the relative error x / x_exact − 1 after each step, per data scale."""
    data = _GaussianData()
    plan = compile_plan(schedule, noise_schedule)
    with torch.inference_mode():
        final = integrate(data, plan, torch.ones(len(PROBE_SCALES), 1, dtype=torch.float64))  # type: ignore[arg-type]
    alpha, sigma = noise_schedule.alpha_sigma(list(schedule.timesteps))
    std = np.sqrt(np.outer(np.asarray(alpha, dtype=np.float64) ** 2, np.asarray(PROBE_SCALES) ** 2)
                  + np.asarray(sigma, dtype=np.float64)[:, None] ** 2)  # [N+1, scales]
    exact = std / std[0]
    out = np.zeros((schedule.num_steps, PROBE_FEATURES), dtype=np.float64)
    for i in range(schedule.num_steps):
        state = final if i == schedule.num_steps - 1 else data.states.get(float(plan.steps[i + 1].node.alpha))
        if state is None:  # pragma: no cover - every step but the last is followed by a model call
            continue
        r = state.squeeze(1).numpy() / exact[i + 1] - 1.0
        out[i] = np.where(np.isfinite(r), r, 1e6)  # a diverging solve: the worst
    return out
