"""FID/KID/PR on digits through torch-fidelity, offline, with a content-keyed cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_fidelity
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from schedsearch.search.metrics.fidelity import (
    DIGITS_EXTRACTOR,
    FidelityConfig,
    ImageTensorDataset,
    content_key,
    fidelity_metrics,
    register_digits_extractor,
    to_uint8,
)
from schedsearch.solvers.digits import load_digits_classifier, load_digits_split

TRAIN, TEST = load_digits_split()


def test_classifier_held_out_accuracy():
    with torch.inference_mode():
        accuracy = (load_digits_classifier()(TEST.images).argmax(1) == TEST.labels).float().mean()
    assert accuracy >= 0.97


def _extract(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Features and logits of ``images`` through torch-fidelity's own extractor path, uint8 in."""
    register_digits_extractor()
    extractor = create_feature_extractor(DIGITS_EXTRACTOR, ["features", "logits"], cuda=False, verbose=False)
    data = ImageTensorDataset(to_uint8(images))
    assert data[0].dtype == torch.uint8
    return get_featuresdict_from_dataset(data, extractor, batch_size=128, cuda=False, save_cpu_ram=True, verbose=False)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """|μa − μb|² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½, by symmetric eigendecompositions."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def test_registered_extractor_is_the_classifier():
    """The registered extractor reads uint8 0…255 as the classifier's [−1, 1]: its logits classify, features match."""
    out = _extract(TEST.images)
    accuracy = (out["logits"].argmax(1) == TEST.labels).float().mean()
    assert accuracy >= 0.97
    with torch.inference_mode():
        features = load_digits_classifier().features(TEST.images)
    # uint8 rounding moves pixels by at most 0.5/127.5 (features by about 0.1 %) …
    assert float((out["features"] - features).norm() / features.norm()) < 5e-3
    # … and on the pixels uint8 can hold (v ↔ v/127.5 − 1) the features are the classifier's exactly.
    with torch.inference_mode():
        exact = load_digits_classifier().features(to_uint8(TEST.images).float() / 127.5 - 1.0)
    torch.testing.assert_close(out["features"], exact, rtol=1e-5, atol=1e-5)


def test_fid_matches_an_independent_frechet_distance():
    """FID(held-out, train) = the Fréchet distance of the classifier's features, computed here in numpy."""
    ours = fidelity_metrics(TEST.images, TRAIN.images, FidelityConfig(kid=False, prc=False))["fid"]
    net = load_digits_classifier()
    with torch.inference_mode():
        a, b = (net.features(x).double().numpy() for x in (TEST.images, TRAIN.images))
    assert ours == pytest.approx(_frechet(a, b), rel=1e-3)  # uint8 rounding: 2e-4
    assert _frechet(a, a[::-1]) == pytest.approx(0.0, abs=1e-6)  # the independent computation itself


def test_registration_is_repeatable():
    assert register_digits_extractor() == register_digits_extractor() == DIGITS_EXTRACTOR


def test_our_fid_is_torch_fidelity_fid():
    samples = TEST.images[:300]
    ours = fidelity_metrics(samples, TRAIN.images, FidelityConfig(kid=False, prc=False))
    register_digits_extractor()
    theirs = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(samples), input2=ImageTensorDataset(TRAIN.images), cuda=False,
        feature_extractor=DIGITS_EXTRACTOR, fid=True, verbose=False, cache=False,
    )
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-9)


def test_metric_orders_real_above_noise():
    real = fidelity_metrics(TEST.images, TRAIN.images, FidelityConfig())
    blurred = torch.nn.functional.avg_pool2d(TEST.images, 3, stride=1, padding=1)
    blur = fidelity_metrics(blurred, TRAIN.images, FidelityConfig())
    noise = torch.rand(len(TEST), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = fidelity_metrics(noise, TRAIN.images, FidelityConfig())
    assert real["fid"] < 10 and real["fid"] * 20 < min(blur["fid"], bad["fid"])
    assert real["precision"] > 0.8 and bad["precision"] < 0.2


def test_cache_is_keyed_by_content(tmp_path):
    config = FidelityConfig(cache_root=tmp_path, kid=False, prc=False)
    samples = TEST.images[:200]
    first = fidelity_metrics(samples, TRAIN.images, config)
    files = set(tmp_path.iterdir())
    assert files and fidelity_metrics(samples, TRAIN.images, config) == first
    assert set(tmp_path.iterdir()) == files  # served from the cache
    changed = TRAIN.images.clone()
    changed[:100] = TEST.images[:100]
    second = fidelity_metrics(samples, changed, config)
    assert set(tmp_path.iterdir()) > files  # a new entry, the old one is not reused
    assert second["fid"] != first["fid"]
    other_extractor = FidelityConfig(extractor="inception-v3-compat", cache_root=tmp_path)
    assert content_key(TRAIN.images, other_extractor) != content_key(TRAIN.images, config)
    assert content_key(TRAIN.images, FidelityConfig(kid_subset_size=100)) != content_key(TRAIN.images, config)


def test_registration_in_ray_workers(ray_runtime):
    """Each Ray worker registers the extractor itself (twice is harmless) and gets the same FID."""

    @ray_runtime.remote
    def fid_in_worker(samples: torch.Tensor, reference: torch.Tensor) -> float:
        from schedsearch.search.metrics.fidelity import FidelityConfig, fidelity_metrics, register_digits_extractor

        register_digits_extractor()
        register_digits_extractor()
        return fidelity_metrics(samples, reference, FidelityConfig(kid=False, prc=False))["fid"]

    samples, reference = TEST.images[:200], TRAIN.images
    expected = fidelity_metrics(samples, reference, FidelityConfig(kid=False, prc=False))["fid"]
    values = ray_runtime.get([fid_in_worker.remote(samples, reference) for _ in range(3)])
    assert values == pytest.approx([expected] * 3, rel=1e-9)
