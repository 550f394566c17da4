"""Noise schedules: α(t), σ(t), λ(t) = log(α/σ) and the inverse t(λ), in float64.

Families: discrete VP (diffusers betas), continuous VP (linear, cosine), EDM sigmas
(α = 1, σ = t) and rectified flow (α = 1 − t, σ = t). Each family has a *time domain*
name that schedules carry, and a *data time* at which σ = 0 (the final time of a
schedule that ends at the data).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .errors import ModelLoadError

ArrayLike = float | np.ndarray

#: Time at which σ = 0, per time domain. Discrete VP uses -1: the "timestep before 0",
#: where diffusers' DDIM puts ``final_alpha_cumprod = 1``.
DATA_TIME: dict[str, float] = {
    "discrete_vp": -1.0,
    "continuous_vp": 0.0,
    "edm": 0.0,
    "flow": 0.0,
}


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


class NoiseSchedule(ABC):
    """The forward process x_t = α(t)·x_0 + σ(t)·ε, times decreasing towards the data.

    ``t_min``/``t_max`` bound the times at which the model may be evaluated;
    ``data_time`` (σ = 0) is allowed only as a schedule's final time.
    """

    time_domain: ClassVar[str]

    @property
    @abstractmethod
    def t_min(self) -> float: ...

    @property
    @abstractmethod
    def t_max(self) -> float: ...

    @property
    def data_time(self) -> float:
        return DATA_TIME[self.time_domain]

    @abstractmethod
    def lambda_(self, t: ArrayLike) -> np.ndarray:
        """Half log-SNR λ(t) = log α(t) − log σ(t); +inf at the data time."""

    @abstractmethod
    def t_of_lambda(self, lam: ArrayLike) -> np.ndarray:
        """Inverse of :meth:`lambda_` on [t_min, t_max]."""

    def alpha_sigma(self, t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(α(t), σ(t)); variance preserving by default (α² + σ² = 1)."""
        lam = self.lambda_(t)
        return np.exp(-0.5 * _softplus(-2.0 * lam)), np.exp(-0.5 * _softplus(2.0 * lam))

    @abstractmethod
    def lambda_torch(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`lambda_` in torch (float64 in, float64 out), differentiable in ``t``."""

    def alpha_sigma_torch(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`alpha_sigma` in torch, differentiable in ``t``."""
        lam = self.lambda_torch(t)
        zero = torch.zeros_like(lam)
        return torch.exp(-0.5 * torch.logaddexp(zero, -2.0 * lam)), torch.exp(-0.5 * torch.logaddexp(zero, 2.0 * lam))

    def rho(self, t: ArrayLike) -> np.ndarray:
        """σ/α: the EDM / k-diffusion "sigma" of time t."""
        return np.exp(-self.lambda_(t))

    def t_of_rho(self, rho: ArrayLike) -> np.ndarray:
        return self.t_of_lambda(-np.log(np.asarray(rho, dtype=np.float64)))

    def is_data_time(self, t: float) -> bool:
        return float(t) == self.data_time

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able description (recorded as provenance)."""


@dataclass(frozen=True, eq=False)
class DiscreteVP(NoiseSchedule):
    """DDPM betas over ``num_train_timesteps`` integer timesteps, as diffusers configures them.

    ``alphas_cumprod`` is computed exactly as diffusers does (float32 cumprod), so that
    the model sees the noise levels it was trained on; λ is interpolated linearly
    between integer timesteps, which makes λ ↔ t an exact pair of inverses.
    """

    alphas_cumprod: np.ndarray
    config: Mapping[str, Any] = field(default_factory=dict)
    time_domain: ClassVar[str] = "discrete_vp"

    def __post_init__(self) -> None:
        acp = np.asarray(self.alphas_cumprod, dtype=np.float64)
        if acp.ndim != 1 or acp.size < 2 or not np.all((acp > 0) & (acp < 1)):
            raise ModelLoadError("alphas_cumprod must be a 1-D array of values in (0, 1)")
        if np.any(np.diff(acp) >= 0):
            raise ModelLoadError("alphas_cumprod must be strictly decreasing")
        lam = 0.5 * (np.log(acp) - np.log1p(-acp))
        object.__setattr__(self, "alphas_cumprod", acp)
        object.__setattr__(self, "_lambdas", lam)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiscreteVP:
        """Build from a diffusers scheduler config (``scheduler_config.json`` contents)."""
        T = int(config.get("num_train_timesteps", 1000))
        kind = config.get("beta_schedule", "linear")
        start = float(config.get("beta_start", 0.0001))
        end = float(config.get("beta_end", 0.02))
        if config.get("rescale_betas_zero_snr", False):
            raise ModelLoadError("scheduler config: rescale_betas_zero_snr (zero terminal SNR) is not supported")
        trained = config.get("trained_betas")
        if trained is not None:
            betas = torch.tensor(trained, dtype=torch.float32)
        elif kind == "linear":
            betas = torch.linspace(start, end, T, dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2
        elif kind == "squaredcos_cap_v2":
            betas = _cosine_betas(T)
        else:
            raise ModelLoadError(f"scheduler config: unknown beta_schedule {kind!r}")
        acp = torch.cumprod(1.0 - betas, dim=0)
        keep = {k: config[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end") if k in config}
        return cls(acp.numpy().astype(np.float64), config=keep)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.size)

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return float(self.num_train_timesteps - 1)

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        lam = np.interp(t, np.arange(self.num_train_timesteps, dtype=np.float64), self._lambdas)  # type: ignore[attr-defined]
        return np.where(t == self.data_time, np.inf, lam)

    def lambda_torch(self, t: torch.Tensor) -> torch.Tensor:
        lams = torch.as_tensor(self._lambdas, dtype=t.dtype, device=t.device)  # type: ignore[attr-defined]
        inside = t.clamp(0.0, self.t_max)
        i = inside.detach().floor().long().clamp(max=self.num_train_timesteps - 2)
        lam = lams[i] + (inside - i.to(t.dtype)) * (lams[i + 1] - lams[i])
        return torch.where(t == self.data_time, torch.full_like(lam, math.inf), lam)

    def t_of_lambda(self, lam: ArrayLike) -> np.ndarray:
        grid = np.arange(self.num_train_timesteps, dtype=np.float64)
        return np.interp(np.asarray(lam, dtype=np.float64), self._lambdas[::-1], grid[::-1])  # type: ignore[attr-defined]

    def spec(self) -> dict[str, Any]:
        return {"family": "discrete_vp", **dict(self.config), "num_train_timesteps": self.num_train_timesteps}


def _cosine_betas(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's squared-cosine betas (diffusers ``squaredcos_cap_v2``)."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class ContinuousVPLinear(NoiseSchedule):
    """Score-SDE VP with linear β(t): log α(t) = −(β₁−β₀)t²/4 − β₀t/2, t ∈ (0, 1]."""

    beta_0: float = 0.1
    beta_1: float = 20.0
    eps: float = 1e-3
    time_domain: ClassVar[str] = "continuous_vp"

    @property
    def t_min(self) -> float:
        return self.eps

    @property
    def t_max(self) -> float:
        return 1.0

    def _log_alpha(self, t: np.ndarray) -> np.ndarray:
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        log_alpha = self._log_alpha(t)
        with np.errstate(divide="ignore"):
            log_sigma = 0.5 * np.log(-np.expm1(2.0 * log_alpha))
        return log_alpha - log_sigma

    def lambda_torch(self, t: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def t_of_lambda(self, lam: ArrayLike) -> np.ndarray:
        neg_log_alpha = 0.5 * _softplus(-2.0 * np.asarray(lam, dtype=np.float64))
        a, b = 0.25 * (self.beta_1 - self.beta_0), 0.5 * self.beta_0
        return 2.0 * neg_log_alpha / (b + np.sqrt(b * b + 4.0 * a * neg_log_alpha))

    def spec(self) -> dict[str, Any]:
        return {"family": "continuous_vp_linear", "beta_0": self.beta_0, "beta_1": self.beta_1, "eps": self.eps}


@dataclass(frozen=True, eq=False)
class ContinuousVPCosine(NoiseSchedule):
    """Improved-DDPM cosine schedule in continuous time, t ∈ (0, t_max ≈ 0.9946]."""

    s: float = 0.008
    eps: float = 1e-3
    t_end: float = 0.9946
    time_domain: ClassVar[str] = "continuous_vp"

    @property
    def t_min(self) -> float:
        return self.eps

    @property
    def t_max(self) -> float:
        return self.t_end

    def _log_alpha(self, t: np.ndarray) -> np.ndarray:
        scale = math.pi / 2 / (1.0 + self.s)
        # ≤ 0 exactly: at the data time the two logs may round apart (λ would be NaN instead of +∞)
        return np.minimum(np.log(np.cos((t + self.s) * scale)) - math.log(math.cos(self.s * scale)), 0.0)

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        log_alpha = self._log_alpha(t)
        with np.errstate(divide="ignore"):
            log_sigma = 0.5 * np.log(-np.expm1(2.0 * log_alpha))
        return log_alpha - log_sigma

    def lambda_torch(self, t: torch.Tensor) -> torch.Tensor:
        scale = math.pi / 2 / (1.0 + self.s)
        log_alpha = (torch.log(torch.cos((t + self.s) * scale)) - math.log(math.cos(self.s * scale))).clamp(max=0.0)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def t_of_lambda(self, lam: ArrayLike) -> np.ndarray:
        log_alpha = -0.5 * _softplus(-2.0 * np.asarray(lam, dtype=np.float64))
        scale = math.pi / 2 / (1.0 + self.s)
        return np.arccos(np.exp(log_alpha + math.log(math.cos(self.s * scale)))) / scale - self.s

    def spec(self) -> dict[str, Any]:
        return {"family": "continuous_vp_cosine", "s": self.s, "eps": self.eps, "t_end": self.t_end}


@dataclass(frozen=True, eq=False)
class EDM(NoiseSchedule):
    """EDM / variance-exploding sigmas: α = 1, σ = t, t ∈ [sigma_min, sigma_max]."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    time_domain: ClassVar[str] = "edm"

    @property
    def t_min(self) -> float:
        return self.sigma_min

    @property
    def t_max(self) -> float:
        return self.sigma_max

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -np.log(np.asarray(t, dtype=np.float64))

    def t_of_lambda(self, lam: ArrayLike) -> np.ndarray:
        return np.exp(-np.asarray(lam, dtype=np.float64))

    def alpha_sigma(self, t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64)
        return np.ones_like(t), t.copy()

    def lambda_torch(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(t)

    def alpha_sigma_torch(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(t), t.clone()

    def spec(self) -> dict[str, Any]:
        return {"family": "edm", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass(frozen=True, eq=False)
class RectifiedFlow(NoiseSchedule):
    """Rectified flow: α = 1 − t, σ = t, t ∈ [t_lo, t_hi] ⊂ (0, 1].

    At t = 1 (pure noise) λ = −∞: only first-order data-prediction steps can start
    there, so the default range ends at 0.999 as diffusers' flow sigmas (1 − 1/1000) do.
    ``shift`` is the timestep shift of the model's scheduler (SD3's
    FlowMatchEulerDiscreteScheduler: σ ↦ sσ / (1 + (s − 1)σ)); it does not change α or σ,
    only the ``shifted`` grid, which spaces times as that scheduler does.
    """

    t_lo: float = 1e-3
    t_hi: float = 0.999
    shift: float = 1.0
    time_domain: ClassVar[str] = "flow"

    @property
    def t_min(self) -> float:
        return self.t_lo

    @property
    def t_max(self) -> float:
        return self.t_hi

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.log1p(-t) - np.log(t)

    def t_of_lambda(self, lam: ArrayLike) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(np.asarray(lam, dtype=np.float64)))

    def alpha_sigma(self, t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64)
        return 1.0 - t, t.copy()

    def lambda_torch(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log1p(-t) - torch.log(t)

    def alpha_sigma_torch(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 - t, t.clone()

    def spec(self) -> dict[str, Any]:
        extra = {} if self.shift == 1.0 else {"shift": self.shift}
        return {"family": "flow", "t_lo": self.t_lo, "t_hi": self.t_hi, **extra}


def noise_schedule_from_spec(spec: Mapping[str, Any]) -> NoiseSchedule:
    """Inverse of :meth:`NoiseSchedule.spec` for the continuous families and diffusers configs."""
    family = spec.get("family")
    args = {k: v for k, v in spec.items() if k != "family"}
    if family == "discrete_vp":
        return DiscreteVP.from_config(args)
    classes: dict[str, type[NoiseSchedule]] = {
        "continuous_vp_linear": ContinuousVPLinear,
        "continuous_vp_cosine": ContinuousVPCosine,
        "edm": EDM,
        "flow": RectifiedFlow,
    }
    if family not in classes:
        raise ModelLoadError(f"noise schedule: unknown family {family!r} (known: discrete_vp, {', '.join(classes)})")
    try:
        return classes[family](**args)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ModelLoadError(f"noise schedule {family}: {exc}") from None
