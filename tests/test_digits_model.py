"""The shipped digits DDPM meets its quality bars (measured on the shipped weights)."""

from __future__ import annotations

import torch

from schedsearch.search.metrics.fidelity import FidelityConfig, fidelity_metrics
from schedsearch.search.metrics.quality import ClassAccuracy
from schedsearch.search.noise_set import NoiseSet
from schedsearch.solvers import baseline, load_model, sample
from schedsearch.solvers.digits import load_digits_classifier, load_digits_split

MODEL = load_model("builtin:digits", device="cpu")
CLASSIFIER = load_digits_classifier()


def test_loads_like_a_user_model():
    assert MODEL.sample_shape == (1, 8, 8)
    assert MODEL.info["num_class_embeds"] == 11 and int(MODEL.uncond) == 10
    assert MODEL.name == "builtin:digits"


def test_guided_samples_are_their_requested_class():
    noises = NoiseSet.draw(MODEL.sample_shape, 500, seed=0, num_classes=10)
    x = sample(MODEL, baseline("dpmpp_3m", 40, MODEL), noises.noise, cond=noises.labels, guidance_scale=2.0)
    scores = ClassAccuracy(CLASSIFIER)(x, noises)
    assert scores["confident_accuracy"] >= 0.85, scores


def test_unconditional_samples_cover_all_classes():
    noises = NoiseSet.draw(MODEL.sample_shape, 500, seed=1)
    null = torch.full((500,), 10)
    x = sample(MODEL, baseline("dpmpp_3m", 40, MODEL), noises.noise, cond=null)
    with torch.inference_mode():
        counts = torch.bincount(CLASSIFIER(x.clamp(-1, 1)).argmax(1), minlength=10)
    assert (counts >= 15).all(), counts.tolist()


def test_fid_orders_real_data_far_below_a_one_step_sampler():
    train, test = load_digits_split()
    config = FidelityConfig(kid=False, prc=False)
    real = fidelity_metrics(test.images, train.images, config)["fid"]
    noises = NoiseSet.draw(MODEL.sample_shape, len(test), seed=2, num_classes=10)
    one_step = sample(MODEL, baseline("ddim", 1, MODEL), noises.noise, cond=noises.labels)
    fine = sample(MODEL, baseline("unipc_bh2", 20, MODEL), noises.noise, cond=noises.labels)
    bad = fidelity_metrics(one_step, train.images, config)["fid"]
    good = fidelity_metrics(fine, train.images, config)["fid"]
    assert real * 10 < bad and good * 3 < bad, (real, good, bad)
