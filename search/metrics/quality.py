"""Sample metrics other than torch-fidelity's: reference distance, class accuracy, exact GMM laws.

A metric is a callable ``(samples, noise_set) → {name: value}``; lower is better for
every name listed in ``LOWER_IS_BETTER``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from schedsearch.solvers import DiffusionModel, GaussianMixture, Schedule, sample

from ..noise_set import NoiseSet
from .fidelity import FidelityConfig, content_key, fidelity_metrics, to_uint8

LOWER_IS_BETTER = {"fid", "kid", "kid_std", "ref_rmse", "mmd", "nll", "fid_b"}

#: what each metric measures, in which unit or on which scale
METRIC_UNITS = {
    "fid": "Fréchet distance between the extractor's feature statistics of samples and reference "
           "(squared feature units)",
    "kid": "kernel (MMD) distance between sample and reference features, mean over subsets "
           "(squared feature units; unbiased, so it can dip below 0)",
    "kid_std": "standard deviation of the KID over subsets",
    "precision": "fraction of samples inside the reference's feature manifold (0 to 1)",
    "recall": "fraction of the reference inside the samples' feature manifold (0 to 1)",
    "f_score": "harmonic mean of precision and recall (0 to 1)",
    "accuracy": "fraction of samples the classifier assigns to their requested class (0 to 1)",
    "confident_accuracy": "fraction classified as their class with probability > 0.8 (0 to 1)",
    "mean_confidence": "mean classifier probability of the requested class (0 to 1)",
    "ref_rmse": "RMSE to a 100-NFE DPM-Solver++ 3M solve of the same noise (data units; images span [-1, 1])",
    "mmd": "squared MMD to the exact mixture, Gaussian kernel of width 1 (0 in expectation for exact samples)",
    "nll": "negative log-likelihood under the exact mixture (nats per sample)",
    "fid_b": "FID in the independent digits classifier's feature space (never searched on)",
}


class Metric(Protocol):
    names: tuple[str, ...]  # the keys it reports

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]: ...


@dataclass
class FidelityMetric:
    """FID / KID / precision / recall against reference images (torch-fidelity).

    The reference is converted to uint8 and its content key computed once, not per evaluation.
    """

    reference: torch.Tensor
    config: FidelityConfig = field(default_factory=FidelityConfig)
    _key: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.reference = to_uint8(self.reference) if self.reference.dtype != torch.uint8 else self.reference
        if self.config.cache_root is not None:
            self._key = content_key(self.reference, self.config)

    @property
    def names(self) -> tuple[str, ...]:
        c = self.config
        return (*(("fid",) if c.fid else ()), *(("kid", "kid_std") if c.kid else ()),
                *(("precision", "recall", "f_score") if c.prc else ()))

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        return fidelity_metrics(samples, self.reference, self.config, reference_key=self._key)


@dataclass
class IndependentFid(FidelityMetric):
    """FID in another feature space (``fid_b``): reported beside the objective, never searched on."""

    @property
    def names(self) -> tuple[str, ...]:
        return ("fid_b",)

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        values = fidelity_metrics(samples, self.reference, self.config, reference_key=self._key)
        return {"fid_b": values["fid"]}


@dataclass
class ReferenceDistance:
    """RMSE to a high-NFE solve of the same noises.

    The solve is made once per full noise set (a head of it is a slice of the same solve) and,
    given ``cache_root`` and a model with a fingerprint, kept on disk keyed by the model's weights,
    the reference schedule, the noises and the guidance scale.
    """

    model: DiffusionModel
    reference_schedule: Schedule
    guidance_scale: float | None = None
    batch_size: int = 1000
    cache_root: Path | None = None
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    names: tuple[str, ...] = field(default=("ref_rmse",), init=False)

    def solution(self, noises: NoiseSet) -> torch.Tensor:
        root = noises.root or noises
        key = root.fingerprint
        if key not in self._cache:
            self._cache[key] = self._load_or_solve(root)
        return self._cache[key][: len(noises)]

    def _load_or_solve(self, noises: NoiseSet) -> torch.Tensor:
        path = self._cache_path(noises)
        if path is not None and path.exists():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(cached, torch.Tensor) and cached.shape[0] == len(noises):
                    return cached
            except Exception:  # a damaged cache entry is recomputed
                pass
        solution = sample_batched(self.model, self.reference_schedule, noises, self.guidance_scale, self.batch_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(solution, tmp)
            os.replace(tmp, path)
        return solution

    def _cache_path(self, noises: NoiseSet) -> Path | None:
        fingerprint = self.model.fingerprint()
        if self.cache_root is None or fingerprint is None or self.model.info.get("mixture") is not None:
            return None  # nothing to keep for opaque callables, nothing worth keeping for analytic mixtures
        key = hashlib.sha256("|".join([
            fingerprint, self.reference_schedule.canonical_hash(), noises.fingerprint, repr(self.guidance_scale),
            str(self.model.state_dtype),
        ]).encode()).hexdigest()[:24]
        return Path(self.cache_root) / "reference" / f"{key}.pt"

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        ref = self.solution(noises).to(samples)
        return {"ref_rmse": float(((samples - ref) ** 2).mean().sqrt())}


@dataclass
class ClassAccuracy:
    """How often a classifier recognises the requested class (conditional models)."""

    classifier: Callable[[torch.Tensor], torch.Tensor]
    confidence: float = 0.8
    names: tuple[str, ...] = field(default=("accuracy", "confident_accuracy", "mean_confidence"), init=False)

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        if noises.labels is None:
            return {}
        with torch.inference_mode():
            probs = torch.softmax(self.classifier(samples.float().clamp(-1, 1)), dim=1)
        labels = noises.labels.to(probs.device)
        p_label = probs.gather(1, labels[:, None])[:, 0]
        hit = probs.argmax(1) == labels
        return {
            "accuracy": float(hit.float().mean()),
            "confident_accuracy": float((hit & (p_label > self.confidence)).float().mean()),
            "mean_confidence": float(p_label.mean()),
        }


@dataclass
class MixtureMetrics:
    """Distances to a Gaussian mixture whose law is known exactly.

    ``mmd``: squared maximum mean discrepancy with a Gaussian kernel of width ℓ, where
    every term involving the mixture is closed-form (only the sample–sample term is an
    average): an unbiased estimate whose expectation is 0 for exact samples.
    ``nll``: −mean log p₀(samples).
    """

    mixture: GaussianMixture
    bandwidth: float = 1.0
    names: tuple[str, ...] = field(default=("mmd", "nll"), init=False)

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        x = samples.double().reshape(samples.shape[0], -1)
        return {"mmd": exact_mmd(self.mixture, x, self.bandwidth), "nll": float(-self.mixture.log_prob(x).mean())}


def exact_mmd(mixture: GaussianMixture, x: torch.Tensor, bandwidth: float) -> float:
    """Unbiased MMD²(samples, mixture) with k(a, b) = exp(−|a−b|²/(2ℓ²))."""
    l2 = bandwidth**2
    n = x.shape[0]
    d2 = torch.cdist(x, x).pow(2)
    kxx = (torch.exp(-d2 / (2 * l2)).sum() - n) / (n * (n - 1))
    w, mu, var = mixture.weights, mixture.means, mixture.stds**2
    v = l2 + var  # (K, D)
    diff = x[:, None, :] - mu[None]  # (N, K, D)
    kxp = (w * torch.exp(-0.5 * (diff**2 / v).sum(-1) + 0.5 * torch.log(l2 / v).sum(-1))).sum(1)
    vv = l2 + var[:, None, :] + var[None, :, :]  # (K, K, D)
    dmu = mu[:, None, :] - mu[None, :, :]
    kpp = (w[:, None] * w[None, :] * torch.exp(-0.5 * (dmu**2 / vv).sum(-1) + 0.5 * torch.log(l2 / vv).sum(-1))).sum()
    return float(kxx - 2 * kxp.mean() + kpp)


def sample_batched(
    model: DiffusionModel, schedule: Schedule, noises: NoiseSet, guidance_scale: float | None, batch_size: int
) -> torch.Tensor:
    """``sample`` over the noise set in batches (bounded memory), returned on the CPU."""
    from schedsearch.solvers import compile_plan

    plan = compile_plan(schedule, model.noise_schedule)
    out = []
    for start in range(0, len(noises), batch_size):
        stop = start + batch_size
        labels = None if noises.labels is None else noises.labels[start:stop]
        out.append(sample(model, schedule, noises.noise[start:stop], cond=labels,
                          guidance_scale=guidance_scale, plan=plan).cpu())
    return torch.cat(out)
