"""Baselines run through ``sample`` reproduce diffusers' own scheduler loops.

diffusers is the oracle here: the same UNet, saved to disk and loaded through
``load_model``, and the same noise, through both code paths.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from schedsearch.solvers import baseline, load_model, sample
from tests.helpers import NUM_CLASSES, save_pipeline

PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"]
BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]
RTOL = 1e-4


@pytest.fixture(scope="module")
def saved_models(tiny_unet, tmp_path_factory):
    """One pipeline directory per (prediction type, beta schedule)."""
    root = tmp_path_factory.mktemp("oracle")
    out = {}
    for pt in PREDICTION_TYPES:
        for bs in BETA_SCHEDULES:
            cfg = {"num_train_timesteps": 1000, "beta_schedule": bs, "prediction_type": pt}
            if bs == "scaled_linear":
                cfg.update(beta_start=0.00085, beta_end=0.012)
            out[pt, bs] = (save_pipeline(root / f"{pt}-{bs}", tiny_unet, cfg), cfg)
    return out


def _noise_and_labels(n: int = 6):
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _diffusers_loop(unet, scheduler, noise, labels, guidance_scale=None):
    """diffusers' loop on the raw UNet (not our adapter); guidance as diffusers' pipelines apply it."""
    x = noise.clone()
    null = torch.full_like(labels, NUM_CLASSES)  # the null class of save_pipeline's sidecar
    with torch.inference_mode():
        for t in scheduler.timesteps:
            out = unet(x, t, class_labels=labels).sample
            if guidance_scale is not None:
                out_u = unet(x, t, class_labels=null).sample
                out = out_u + guidance_scale * (out - out_u)
            x = scheduler.step(out, t, x).prev_sample
    return x


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


CUSTOM_TIMESTEPS = {5: [999, 720, 480, 260, 90], 8: [999, 860, 700, 560, 420, 300, 170, 60]}


@pytest.mark.parametrize("pt", PREDICTION_TYPES)
@pytest.mark.parametrize("bs", BETA_SCHEDULES)
@pytest.mark.parametrize(
    "name,algorithm,order",
    [("dpmpp_2m", "dpmsolver++", 2), ("dpmpp_3m", "dpmsolver++", 3), ("ddim", "dpmsolver++", 1),
     ("dpm_solver_1", "dpmsolver", 1), ("dpm_solver_2", "dpmsolver", 2), ("dpm_solver_3", "dpmsolver", 3)],
)
def test_dpm_solver_matches_diffusers(saved_models, tiny_unet, pt, bs, name, algorithm, order):
    path, cfg = saved_models[pt, bs]
    model = load_model(path, device="cpu")
    noise, labels = _noise_and_labels()
    for nfe, times in CUSTOM_TIMESTEPS.items():
        if algorithm == "dpmsolver" and bs == "squaredcos_cap_v2":
            # Noise prediction from t = 999 of the squared-cosine schedule (α = 4.9e-5) cancels
            # terms 10⁴ times larger than the result: float32 rounding alone moves diffusers'
            # result 2.9e-3 (ours 3.6e-4) from the float64 solution, and diffusers computes
            # its update in float32 whatever the input dtype. From t = 990 (α = 0.014) it is
            # well conditioned.
            times = [990, *times[1:]]
        final = "zero" if algorithm == "dpmsolver++" else "sigma_min"
        sched = DPMSolverMultistepScheduler(
            **cfg, algorithm_type=algorithm, solver_order=order, final_sigmas_type=final
        )
        sched.set_timesteps(timesteps=times)
        expected = _diffusers_loop(tiny_unet, sched, noise, labels)
        ours = sample(model, baseline(name, nfe, model, grid=times), noise, cond=labels)
        assert _rel(ours, expected) <= RTOL, (name, nfe)


@pytest.mark.parametrize("pt", PREDICTION_TYPES)
@pytest.mark.parametrize("bs", BETA_SCHEDULES)
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_diffusers(saved_models, tiny_unet, pt, bs, variant):
    path, cfg = saved_models[pt, bs]
    model = load_model(path, device="cpu")
    noise, labels = _noise_and_labels()
    # diffusers' bh1 returns NaN on a final step to σ = 0 (its B(h) = −h = −inf times a zero
    # correction), so bh1 is compared ending at the smallest trained noise level instead.
    final = "zero" if variant == "bh2" else "sigma_min"
    for nfe in (4, 6, 10):
        for corrector in (True, False):
            disabled = [] if corrector else list(range(nfe))
            sched = UniPCMultistepScheduler(**cfg, solver_type=variant, final_sigmas_type=final, disable_corrector=disabled)
            sched.set_timesteps(nfe)
            expected = _diffusers_loop(tiny_unet, sched, noise, labels)
            ours = baseline(f"{'unipc' if corrector else 'unip'}_{variant}", nfe, model, grid="linspace")
            if final == "sigma_min":
                ours = replace(ours, timesteps=(*ours.timesteps[:-1], 0.0))
            assert _rel(sample(model, ours, noise, cond=labels), expected) <= RTOL, (nfe, corrector)


@pytest.mark.parametrize("pt", PREDICTION_TYPES)
@pytest.mark.parametrize("bs", BETA_SCHEDULES)
def test_ddim_matches_diffusers(saved_models, tiny_unet, pt, bs):
    path, cfg = saved_models[pt, bs]
    model = load_model(path, device="cpu")
    noise, labels = _noise_and_labels()
    for nfe in (3, 5, 10):
        sched = DDIMScheduler(**cfg, clip_sample=False)  # clipping is data thresholding, not the solver
        sched.set_timesteps(nfe)
        expected = _diffusers_loop(tiny_unet, sched, noise, labels)
        ours = sample(model, baseline("ddim", nfe, model, grid="leading"), noise, cond=labels)
        assert _rel(ours, expected) <= RTOL, nfe


def test_guided_sampling_matches_diffusers(saved_models, tiny_unet):
    """Classifier-free guidance: our guided sampler against diffusers' loop guiding raw UNet calls."""
    path, cfg = saved_models["epsilon", "linear"]
    model = load_model(path, device="cpu")
    noise, labels = _noise_and_labels()
    schedule = baseline("dpmpp_2m", 6, model, grid="linspace")
    results = {}
    for scale in (2.5, 0.0):
        sched = DPMSolverMultistepScheduler(**cfg)
        sched.set_timesteps(6)
        expected = _diffusers_loop(tiny_unet, sched, noise, labels, guidance_scale=scale)
        results[scale] = sample(model, schedule, noise, cond=labels, guidance_scale=scale)
        assert _rel(results[scale], expected) <= RTOL, scale
    null = torch.full_like(labels, NUM_CLASSES)
    assert _rel(results[0.0], sample(model, schedule, noise, cond=null)) <= RTOL  # s = 0: the unconditional model
    unguided = sample(model, schedule, noise, cond=labels)
    assert _rel(unguided, results[2.5]) > 1e-3  # guidance changes the result
