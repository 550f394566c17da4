"""The model's own sensitivity: the spectrum of ∂x̂₀/∂x along its sampling trajectories.

A solver's error depends on how the model's data prediction x̂₀(x, t) reacts to an error in its
input x. For Gaussian data that reaction is one number per direction, c = α s² / (α² s² + σ²),
set at every noise level by one data scale s (:mod:`.probe` runs a schedule on it).
A trained network reacts differently: near the data its sensitivity follows the data's local
structure, at high noise it amplifies its own ε̂ errors by 1/α (digits: eigenvalues up to ±4
at t = 999, where Gaussian data of the digits' scale, s ≤ 1, give at most 0.006). Both change which steps and
solver decisions are stable.

:func:`measure_spectrum` runs the model along a fine reference trajectory from a few draws and,
at every model call, takes the eigenvalues of the symmetric part of the Jacobian ∂x̂₀/∂x (exactly
for up to ``exact_limit`` dimensions, otherwise by Lanczos: Jᵀv by autograd, J v by central
differences): their ``quantiles`` (mean over the draws) as curves over λ.
:func:`~schedsearch.predictors.probe.spectrum_errors_padded` then runs any schedule on the linear
model x̂₀ = c_q(λ)·x of each curve — a one-dimensional stand-in for a direction of that
sensitivity — for whole batches, in the Gaussian probe's recursion. On the digits search trials
these rows lift one network's held-out τ from 0.697 to 0.733 and five networks' from 0.714 to
0.754 (``benchmarks/predictor.py``). Measured once per model (seconds for the bundled models),
stored with the predictor's checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from schedsearch.solvers import DiffusionModel, SolverError, baseline
from schedsearch.solvers.sampler import sample

#: eigenvalue quantiles measured (each one curve over λ)
QUANTILES = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98)


@dataclass(frozen=True)
class ModelSpectrum:
    """``curves[j][q]``: quantile ``quantiles[q]`` of the eigenvalues of sym(∂x̂₀/∂x) at λ = ``lam[j]`` (ascending),
    the mean over the measured draws."""

    lam: tuple[float, ...]
    curves: tuple[tuple[float, ...], ...]
    quantiles: tuple[float, ...] = QUANTILES

    def __post_init__(self) -> None:
        if len(self.lam) < 2 or len(self.curves) != len(self.lam):
            raise ValueError("model spectrum: at least two points, one curve row per point")
        if any(len(row) != len(self.quantiles) for row in self.curves):
            raise ValueError("model spectrum: every row needs one value per quantile")
        if any(b <= a for a, b in zip(self.lam, self.lam[1:], strict=False)):
            raise ValueError("model spectrum: λ must increase")
        if not all(math.isfinite(v) for row in self.curves for v in row) or not all(map(math.isfinite, self.lam)):
            raise ValueError("model spectrum: values must be finite")

    @property
    def width(self) -> int:
        return len(self.quantiles)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """λ ``[P]`` and the curves ``[P, Q]`` as float64 arrays."""
        return np.asarray(self.lam, dtype=np.float64), np.asarray(self.curves, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"lambda": list(self.lam), "curves": [list(r) for r in self.curves], "quantiles": list(self.quantiles)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpectrum:
        return cls(tuple(map(float, data["lambda"])), tuple(tuple(map(float, r)) for r in data["curves"]),
                   tuple(map(float, data["quantiles"])))


class _Recorder:
    """Wraps a network; keeps the (time, state) of every call (the conditional half when guided)."""

    def __init__(self, network: Any, batch: int) -> None:
        self.network, self.batch, self.calls = network, batch, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        self.calls.append((float(t[0]), x[: self.batch].detach().clone()))
        return self.network(x, t, cond)


def measure_spectrum(model: DiffusionModel, noise: torch.Tensor, cond: Any = None,
                     guidance_scale: float | None = None, steps: int = 40,
                     quantiles: Sequence[float] = QUANTILES, exact_limit: int = 1024,
                     lanczos_steps: int = 24, generator: torch.Generator | None = None) -> ModelSpectrum:
    """The spectrum of ``model`` along its ``steps``-step DPM-Solver++(2M) trajectories from ``noise`` (a few draws;
    ``cond`` their conditioning, one row each). ``generator`` draws the Lanczos start vectors (unused when exact)."""
    if steps < 2:
        raise ValueError(f"model spectrum: {steps} steps, expected at least 2")
    draws = int(noise.shape[0])
    recorder = _Recorder(model.network, draws)
    recording = dataclasses.replace(model, network=recorder)
    sample(recording, baseline("dpmpp_2m", steps, model), noise, cond, guidance_scale)
    qs = np.asarray(quantiles, dtype=np.float64)
    rows: dict[float, np.ndarray] = {}
    for t, x in recorder.calls:
        alpha, sigma = (float(v) for v in np.asarray(model.noise_schedule.alpha_sigma([t]), dtype=np.float64)[:, 0])
        if sigma <= 0.0:
            continue
        per_draw = []
        for d in range(draws):
            c = None if cond is None else cond[d: d + 1]

            def data_prediction(v: torch.Tensor, c: Any = c, t: float = t, a: float = alpha, s: float = sigma
                                ) -> torch.Tensor:  # [n, dim] → [n, dim], the draw's conditioning on every row
                labels = None if c is None else c.expand(v.shape[0], *c.shape[1:])
                out = model.predict(v.reshape(-1, *model.sample_shape), t, a, s, labels, guidance_scale).data
                return out.reshape(v.shape[0], -1)

            state = x[d].reshape(-1).to(model.state_dtype)
            per_draw.append(_quantiles(data_prediction, state, qs, exact_limit, lanczos_steps, generator))
        rows[float(np.log(alpha / sigma))] = np.mean(per_draw, axis=0)
    lam = sorted(rows)
    return ModelSpectrum(tuple(lam), tuple(tuple(float(v) for v in rows[k]) for k in lam), tuple(map(float, qs)))


def model_spectrum(model: DiffusionModel, seed: int, guidance_scale: float | None = None, draws: int = 4
                   ) -> ModelSpectrum:
    """:func:`measure_spectrum` from ``draws`` initial noises drawn from ``seed`` (class labels 0, 1, … for a
    class-conditional model), the start vectors from the same seed. A model it cannot be measured on (a user's
    network that refuses the batch, guidance without an unconditional input) raises :class:`SolverError` with the
    cause's message."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((draws, *model.sample_shape), generator=generator, dtype=model.state_dtype)
    labels = None if not model.num_classes else torch.arange(draws) % model.num_classes
    try:
        return measure_spectrum(model, noise, labels, guidance_scale, generator=generator)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SolverError(str(exc)) from exc


def _quantiles(fn: Any, x: torch.Tensor, qs: np.ndarray, exact_limit: int, lanczos_steps: int,
               generator: torch.Generator | None) -> np.ndarray:
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        if x.numel() <= exact_limit:
            jac = _jacobian(fn, x).double()
            values = np.linalg.eigvalsh(((jac + jac.T) / 2).cpu().numpy())
            return np.quantile(values, qs)
        return _lanczos_quantiles(lambda v: fn(v[None])[0], x, qs, lanczos_steps, generator)


def _jacobian(fn: Any, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """∂fn/∂x at ``x`` (``[dim]``), a row per copy of x in one batch: copy i's gradient of its own output i is row i.
    Diffusion networks treat the samples of a batch independently (no batch statistics at inference), so one
    forward and one backward pass per ``chunk`` rows do what ``dim`` backward passes would."""
    dim = x.numel()
    rows = []
    for start in range(0, dim, chunk):
        index = torch.arange(start, min(dim, start + chunk), device=x.device)
        copies = x.expand(len(index), dim).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(copies)[torch.arange(len(index)), index].sum(), copies)
        rows.append(grad)
    return torch.cat(rows)


def _lanczos_quantiles(fn: Any, x: torch.Tensor, qs: np.ndarray, k: int, generator: torch.Generator | None
                       ) -> np.ndarray:
    """Stochastic Lanczos quadrature: the Ritz values of sym(J) from one random start, weighted by the squared first
    components of their eigenvectors, as a distribution whose ``qs`` quantiles stand for the spectrum's."""
    x = x.requires_grad_(True)
    y = fn(x)

    def op(v: torch.Tensor) -> torch.Tensor:
        (jtv,) = torch.autograd.grad(y, x, v, retain_graph=True)  # Jᵀv
        with torch.no_grad():  # J v by central differences: every network runs forward; not all run twice backward
            eps = 1e-3 * max(1.0, float(x.abs().max()))
            jv = (fn(x + eps * v) - fn(x - eps * v)) / (2 * eps)
        return 0.5 * (jv + jtv.detach())

    v = torch.randn(x.numel(), generator=generator, dtype=x.dtype).to(x.device)
    v = v / v.norm()
    basis, alphas, betas = [v], [], []
    for i in range(min(k, x.numel())):
        w = op(basis[-1])
        a = float(w @ basis[-1])
        alphas.append(a)
        scale = float(w.norm())
        for _ in range(2):  # full re-orthogonalisation, twice (once loses orthogonality on clustered spectra)
            for b in basis:
                w = w - (w @ b) * b
        beta = float(w.norm())
        if i == k - 1 or beta <= 1e-9 * max(scale, 1e-30):  # the Krylov space is exhausted
            break
        betas.append(beta)
        basis.append(w / beta)
    tri = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1], -1)
    theta, vectors = np.linalg.eigh(tri)
    weights = vectors[0] ** 2
    cumulative = np.cumsum(weights) / weights.sum()
    return np.interp(qs, cumulative - weights / (2 * weights.sum()), theta)
