"""Analytic Gaussian-mixture diffusion models: exact denoiser and exact samples.

Data p₀ = Σ_k w_k N(μ_k, diag(s_k²)). Under x_t = α x₀ + σ ε every component stays
Gaussian, N(α μ_k, α² s_k² + σ²), so the posterior mean E[x₀ | x_t] is closed-form:
responsibilities γ_k(x_t) times μ_k + α s_k² (x_t − α μ_k)/(α² s_k² + σ²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .models import DiffusionModel, Parameterization
from .noise_schedules import NoiseSchedule


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A diagonal Gaussian mixture in R^D (weights (K,), means (K, D), stds (K, D))."""

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        mu = torch.as_tensor(self.means, dtype=torch.float64)
        sd = torch.as_tensor(self.stds, dtype=torch.float64).expand_as(mu).clone()
        if w.dim() != 1 or mu.dim() != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError("GaussianMixture: weights (K,) and means (K, D) do not match")
        if torch.any(w <= 0) or torch.any(sd <= 0):
            raise ValueError("GaussianMixture: weights and stds must be positive")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "stds", sd)

    @classmethod
    def random(cls, dim: int, components: int, generator: torch.Generator, spread: float = 2.0) -> GaussianMixture:
        """A random mixture: means ~ N(0, spread²), stds in [0.1, 0.5], Dirichlet-ish weights."""
        g = generator
        means = spread * torch.randn(components, dim, generator=g, dtype=torch.float64)
        stds = 0.1 + 0.4 * torch.rand(components, dim, generator=g, dtype=torch.float64)
        weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        return cls(weights, means, stds)

    @classmethod
    def ring(cls, components: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
        """K equal components on a circle in R² (a classic hard 2-D target)."""
        angle = torch.arange(components, dtype=torch.float64) * (2 * math.pi / components)
        means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        return cls(torch.ones(components), means, torch.full_like(means, std))

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples from p₀ (float64)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k] * eps

    def log_prob(self, x: torch.Tensor, alpha: float | torch.Tensor = 1.0, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """log p_t(x) of the noised mixture (α, σ scalars or per-sample (B,))."""
        x, a, s = self._prepare(x, alpha, sigma)
        var = a**2 * self.stds.to(x) ** 2 + s**2  # (B, K, D)
        diff = x[:, None, :] - a * self.means.to(x)
        comp = -0.5 * ((diff**2 / var) + var.log() + math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(comp + self.weights.to(x).log(), dim=1)

    def denoise(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact E[x₀ | x_t = x]."""
        x, a, s = self._prepare(x, alpha, sigma)
        var0 = self.stds.to(x) ** 2
        var = a**2 * var0 + s**2
        diff = x[:, None, :] - a * self.means.to(x)
        comp = -0.5 * ((diff**2 / var) + var.log()).sum(-1) + self.weights.to(x).log()
        resp = torch.softmax(comp, dim=1)  # (B, K)
        post = self.means.to(x) + a * var0 * diff / var  # (B, K, D)
        return (resp[:, :, None] * post).sum(1)

    @staticmethod
    def _prepare(x: torch.Tensor, alpha: Any, sigma: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        return x, a, s

    def as_model(
        self, noise_schedule: NoiseSchedule, dtype: torch.dtype = torch.float64, name: str = "gmm"
    ) -> DiffusionModel:
        """A :class:`DiffusionModel` whose network is the exact denoiser (x̂₀ parameterisation)."""
        return DiffusionModel(
            network=_MixtureDenoiser(self, noise_schedule),
            parameterization=Parameterization.X0,
            noise_schedule=noise_schedule,
            sample_shape=(self.dim,),
            dtype=dtype,
            data_mean=self.mean.to(dtype),
            name=name,
            info={"kind": "gaussian_mixture", "mixture": self, "components": int(self.weights.numel()), "dim": self.dim},
        )


class _MixtureDenoiser:
    """Network ``(x, t, cond) → E[x₀ | x_t]`` for a mixture under a noise schedule."""

    def __init__(self, mixture: GaussianMixture, noise_schedule: NoiseSchedule) -> None:
        self.mixture, self.noise_schedule = mixture, noise_schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        alpha, sigma = self.noise_schedule.alpha_sigma_torch(t.to(torch.float64))  # differentiable in t
        return self.mixture.denoise(x, alpha.to(x), sigma.to(x))
