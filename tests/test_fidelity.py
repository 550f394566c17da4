"""FID/KID/PR on digits through torch-fidelity, offline, with a content-keyed cache."""

from __future__ import annotations

import pytest
import torch
import torch_fidelity

from schedsearch.search.metrics.fidelity import (
    DIGITS_EXTRACTOR,
    FidelityConfig,
    ImageTensorDataset,
    content_key,
    fidelity_metrics,
    register_digits_extractor,
)
from schedsearch.solvers.digits import load_digits_classifier, load_digits_split

TRAIN, TEST = load_digits_split()


def test_classifier_held_out_accuracy():
    with torch.inference_mode():
        accuracy = (load_digits_classifier()(TEST.images).argmax(1) == TEST.labels).float().mean()
    assert accuracy >= 0.97


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
