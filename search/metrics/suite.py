"""The metrics that fit a model, and the objective a search minimises by default.

Exact laws for Gaussian mixtures (MMD², NLL), FID / KID / precision-recall + class accuracy
for the digits model (bundled extractor) or any image model given reference images, and
for every model the RMSE to a high-NFE solve of the same noise (the cheap proxy).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from schedsearch.solvers import DiffusionModel, GaussianMixture, baseline

from .latent import ClipModelError, ClipScore
from .fidelity import DIGITS_EXTRACTOR, INCEPTION_EXTRACTOR, INDEPENDENT_DIGITS_EXTRACTOR, ExtractorError, FidelityConfig
from .quality import ClassAccuracy, FidelityMetric, IndependentFid, Metric, MixtureMetrics, ReferenceDistance

#: the reference solve behind ``ref_rmse`` (and the model's "floor"): DPM-Solver++ 3M with this many steps
REFERENCE_STEPS = 100


def metric_suite(
    model: DiffusionModel,
    guidance_scale: float | None = None,
    reference_images: torch.Tensor | None = None,
    cache_root: Path | None = None,
    extractor: str | None = None,
    extractor_weights: Path | None = None,
    reference_steps: int = REFERENCE_STEPS,
    clip_model: Path | None = None,
) -> tuple[list[Metric], str]:
    """(metrics, default objective) for ``model``.

    Given ``reference_images`` (uint8 or [−1, 1], shaped like the model's images), FID / KID /
    precision-recall run through torch-fidelity with ``extractor`` (default: the digits
    classifier for the digits model, Inception otherwise) and, where given, a local
    weights file for it. Given ``clip_model`` (a local CLIPModel directory), the CLIP score of
    each sample against its prompt. A latent model's image metrics see its decoded latents;
    ``ref_rmse`` stays on the latents.
    """
    mixture = model.info.get("mixture")
    reference = ReferenceDistance(model, baseline("dpmpp_3m", reference_steps, model), guidance_scale,
                                  cache_root=cache_root)
    metrics: list[Metric] = [reference]
    objective = "ref_rmse"
    if isinstance(mixture, GaussianMixture):
        metrics.append(MixtureMetrics(mixture))
        objective = "mmd"
    if model.info.get("digits"):
        from schedsearch.solvers.digits import load_digits_classifier, load_digits_split

        train, _ = load_digits_split()
        reference_images = train.images if reference_images is None else reference_images
        metrics.append(ClassAccuracy(load_digits_classifier()))
        if extractor is None and extractor_weights is None:
            metrics.append(IndependentFid(reference_images, FidelityConfig(
                extractor=INDEPENDENT_DIGITS_EXTRACTOR, kid=False, prc=False, cache_root=cache_root)))
    images: list[Metric] = []  # metrics of images: the samples, or a latent model's decoded samples
    if reference_images is not None:
        name = extractor or (DIGITS_EXTRACTOR if model.info.get("digits") else INCEPTION_EXTRACTOR)
        config = FidelityConfig(extractor=name, cache_root=cache_root, extractor_weights=extractor_weights)
        config.check_extractor()
        if name == INCEPTION_EXTRACTOR and model.image_shape[0] != 3:
            raise ExtractorError(f"{name} takes RGB images; this model samples {model.image_shape[0]} channel(s)")
        if name != DIGITS_EXTRACTOR and extractor_weights is None:  # torch-fidelity would download them
            example = " (weights-inception-2015-12-05-6726825d.pth)" if name == INCEPTION_EXTRACTOR else ""
            raise ExtractorError(f"--extractor-weights: feature extractor {name!r} needs a local weights file"
                                 f"{example}; nothing is downloaded")
        config.check_weights()
        images.append(FidelityMetric(reference_images, config))
        objective = "fid"
    if clip_model is not None:
        prompts = model.info.get("prompts")
        if not prompts:
            raise ClipModelError(f"clip_score needs a text-to-image model with prompts; {model.name} takes none")
        images.append(ClipScore(clip_model, prompts, device=model.device))
        objective = objective if objective == "fid" else "clip_score"
    if images and model.decoder is not None:
        from .latent import Decoded

        metrics.append(Decoded(model.decoder, images))
    else:
        metrics.extend(images)
    return metrics, objective


def lean_metrics(metrics: list[Metric], objective: str) -> list[Metric]:
    """See :func:`_lean` (a latent model's decoded metrics are trimmed the same way, and dropped when
    the objective needs none of them: no decoding at all)."""
    from .latent import Decoded

    out: list[Metric] = []
    for metric in metrics:
        if isinstance(metric, Decoded):
            inner = _lean(list(metric.metrics), objective)
            if inner:
                out.append(replace(metric, metrics=inner))
        else:
            out.extend(_lean([metric], objective))
    return out


def _lean(metrics: list[Metric], objective: str) -> list[Metric]:
    """Only what ``objective`` needs, plus the cheap metrics: torch-fidelity computes just the objective's
    statistic (KID and precision/recall cost several times FID), the reference solve is skipped unless the
    objective is its distance. Searches measure proposals with these and validation with all of them."""
    out: list[Metric] = []
    for metric in metrics:
        if isinstance(metric, IndependentFid):
            if objective in metric.names:
                out.append(metric)
        elif isinstance(metric, FidelityMetric):
            if objective in metric.names:
                wants = {"fid": "fid", "kid": "kid", "kid_std": "kid"}.get(objective, "prc")
                config = replace(metric.config, fid=wants == "fid", kid=wants == "kid", prc=wants == "prc")
                out.append(FidelityMetric(metric.reference, config))
        elif isinstance(metric, ReferenceDistance):
            if objective == "ref_rmse":
                out.append(metric)
        elif isinstance(metric, ClipScore):  # a CLIP forward per sample: only when searched on
            if objective == "clip_score":
                out.append(metric)
        else:
            out.append(metric)
    return out
