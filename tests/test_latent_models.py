"""Latent pipelines: our sampler on a tiny SD / SDXL / DiT / PixArt / SD3 pipeline reproduces the
family's own diffusers pipeline (the oracle) on the same latents, prompts and timesteps."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import (
    DiTPipeline,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)

from schedsearch.solvers import ModelLoadError, SolverError, baseline, load_model, sample
from schedsearch.solvers.pipelines import with_prompts
from tests import latent_pipelines as lp

RTOL = 1e-4
PROMPTS = ["a photo of a cat", "a red dog", "a blue house"]
NEGATIVE = "blurry sketch"
TIMES = [999, 720, 480, 260, 90]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny pipeline, saved once (lazily)."""
    root = tmp_path_factory.mktemp("latent")
    cache: dict[str, object] = {}

    def get(name: str, **kw):
        key = name + repr(sorted(kw.items()))
        if key not in cache:
            cache[key] = getattr(lp, f"save_{name}")(root / key.replace(" ", "").replace("'", ""), **kw)
        return cache[key]

    return get


def _latents(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _ours(path, name: str, times, latents, scale: float, grid=None):
    model = with_prompts(load_model(path, device="cpu"), PROMPTS, NEGATIVE)
    schedule = baseline(name, len(times), model, grid=grid if grid is not None else list(times))
    return sample(model, schedule, latents, cond=torch.arange(len(PROMPTS)), guidance_scale=scale)


def _use_dpmpp_2m(pipe) -> None:
    """The pipeline's scheduler becomes DPM-Solver++ 2M ending at σ = 0: our ``dpmpp_2m``."""
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++",
                                                             solver_order=2, final_sigmas_type="zero")


def _pipe(cls, path, **kw):
    pipe = cls.from_pretrained(path, low_cpu_mem_usage=False, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_stable_diffusion_matches_its_pipeline(saved, prediction_type):
    path = saved("sd", prediction_type=prediction_type)
    pipe = _pipe(StableDiffusionPipeline, path, safety_checker=None, requires_safety_checker=False)
    latents = _latents()
    for scale in (3.0, 1.0):
        _use_dpmpp_2m(pipe)
        expected = pipe(PROMPTS, negative_prompt=[NEGATIVE] * 3, timesteps=TIMES, guidance_scale=scale,
                        latents=latents.clone(), output_type="latent").images
        assert _rel(_ours(path, "dpmpp_2m", TIMES, latents, scale), expected) <= RTOL, scale
    # UniPC takes no explicit timesteps in diffusers: its own spacing, handed to ours as explicit times
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, solver_type="bh2",
                                                         final_sigmas_type="zero")
    expected = pipe(PROMPTS, negative_prompt=[NEGATIVE] * 3, num_inference_steps=6, guidance_scale=3.0,
                    latents=latents.clone(), output_type="latent").images
    times = [float(t) for t in pipe.scheduler.timesteps]
    assert _rel(_ours(path, "unipc_bh2", times, latents, 3.0), expected) <= RTOL


def test_sdxl_matches_its_pipeline(saved):
    path = saved("sdxl")
    pipe = _pipe(StableDiffusionXLPipeline, path)
    _use_dpmpp_2m(pipe)
    latents = _latents(seed=1)
    for negative in (NEGATIVE, None):  # None: SDXL's zeroed negative embeddings (force_zeros_for_empty_prompt)
        expected = pipe(PROMPTS, negative_prompt=None if negative is None else [negative] * 3, timesteps=TIMES,
                        guidance_scale=4.0, latents=latents.clone(), output_type="latent").images
        model = with_prompts(load_model(path, device="cpu"), PROMPTS, negative)
        ours = sample(model, baseline("dpmpp_2m", 5, model, grid=TIMES), latents, cond=torch.arange(3),
                      guidance_scale=4.0)
        assert _rel(ours, expected) <= RTOL, negative


def test_dit_matches_its_pipeline(saved):
    """DiTPipeline draws its latents from a generator and always decodes: compare the decoded images."""
    path = saved("dit")
    pipe = _pipe(DiTPipeline, path)
    _use_dpmpp_2m(pipe)
    labels = [3, 999, 42]
    model = load_model(path, device="cpu")
    assert model.num_classes == 1000
    for scale in (4.0, 1.0):
        images = pipe(labels, guidance_scale=scale, generator=torch.Generator().manual_seed(5),
                      num_inference_steps=5, output_type="pt").images
        times = [float(t) for t in pipe.scheduler.timesteps]
        latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
        ours = sample(model, baseline("dpmpp_2m", 5, model, grid=times), latents, cond=torch.tensor(labels),
                      guidance_scale=scale)
        decoded = (model.decoder(ours) / 2 + 0.5).clamp(0, 1)
        assert _rel(decoded, images) <= RTOL, scale


def test_pixart_matches_its_pipeline(saved):
    path = saved("pixart")
    pipe = _pipe(PixArtAlphaPipeline, path)
    _use_dpmpp_2m(pipe)
    latents = _latents(seed=2)
    expected = pipe(PROMPTS, negative_prompt=NEGATIVE, timesteps=TIMES, guidance_scale=4.5, latents=latents.clone(),
                    output_type="latent", use_resolution_binning=False, clean_caption=False).images
    assert _rel(_ours(path, "dpmpp_2m", TIMES, latents, 4.5), expected) <= RTOL


def test_sd3_flow_matching_matches_its_pipeline_and_higher_orders_converge(saved):
    path = saved("sd3", shift=3.0)
    pipe = _pipe(StableDiffusion3Pipeline, path)
    model = with_prompts(load_model(path, device="cpu"), PROMPTS, NEGATIVE)
    assert model.noise_schedule.shift == 3.0
    latents = _latents(seed=3)
    cond = torch.arange(3)

    def euler(n: int) -> tuple[torch.Tensor, list[float]]:
        sigmas = torch.linspace(0.997, 0.002, n).tolist()  # FlowMatchEulerDiscrete shifts them (0.997 → 0.999)
        out = pipe(PROMPTS, negative_prompt=[NEGATIVE] * 3, sigmas=sigmas, guidance_scale=3.0,
                   latents=latents.clone(), output_type="latent").images
        return out, [float(s) for s in pipe.scheduler.sigmas[:-1]]

    expected, times = euler(6)
    ours = sample(model, baseline("ddim", 6, model, grid=times), latents, cond=cond, guidance_scale=3.0)
    assert _rel(ours, expected) <= RTOL  # DDIM with data prediction is the flow's Euler step
    images = pipe(PROMPTS, negative_prompt=[NEGATIVE] * 3, sigmas=torch.linspace(0.997, 0.002, 6).tolist(),
                  guidance_scale=3.0, latents=latents.clone(), output_type="pt").images
    assert _rel((model.decoder(ours) / 2 + 0.5).clamp(0, 1), images) <= RTOL  # decoded with its shift factor
    # the shifted grid is FlowMatchEulerDiscrete's own spacing
    pipe_default = pipe(PROMPTS, negative_prompt=[NEGATIVE] * 3, num_inference_steps=6, guidance_scale=3.0,
                        latents=latents.clone(), output_type="latent").images
    default_times = baseline("ddim", 6, model, grid="shifted").timesteps[:-1]
    torch.testing.assert_close(torch.tensor(default_times, dtype=torch.float64), pipe.scheduler.sigmas[:-1].double(), atol=2e-3, rtol=0)
    assert _rel(sample(model, baseline("ddim", 6, model, grid="shifted"), latents, cond=cond, guidance_scale=3.0),
                pipe_default) <= 5e-3  # ours starts at σ = 0.999, the scheduler at 1
    # the Euler oracle and our higher orders converge on one solution, ours far faster
    truth = sample(model, baseline("dpmpp_3m", 200, model), latents, cond=cond, guidance_scale=3.0)
    euler_err = [_rel(euler(n)[0], truth) for n in (8, 32)]
    ours_err = [_rel(sample(model, baseline("dpmpp_3m", n, model), latents, cond=cond, guidance_scale=3.0), truth)
                for n in (8, 32)]
    assert euler_err[0] / euler_err[1] > 3.0, euler_err  # first order: 4× the steps, about 4× less error
    assert ours_err[0] / ours_err[1] > 20.0, ours_err  # third order: far more
    assert ours_err[1] < 0.1 * euler_err[1], (ours_err, euler_err)


def test_prompts_are_encoded_once_and_pair_with_noise(saved):
    path = saved("sd")
    base = load_model(path, device="cpu")
    assert base.num_classes == 1 and base.info["prompts"] == ("",)  # loads prompted with the empty prompt
    model = with_prompts(base, PROMPTS)
    assert model.num_classes == 3 and model.latent and model.image_shape == (3, 16, 16)
    assert model.fingerprint() != with_prompts(base, PROMPTS[::-1]).fingerprint() != base.fingerprint()
    assert model.fingerprint() == with_prompts(model, PROMPTS).fingerprint()
    s = baseline("dpmpp_2m", 4, model)
    latents = _latents(6)
    batch = sample(model, s, latents, cond=torch.arange(6) % 3, guidance_scale=2.0)
    one = sample(with_prompts(base, PROMPTS[1:2]), s, latents[1:2], cond=torch.tensor([0]), guidance_scale=2.0)
    assert _rel(batch[1:2], one) <= RTOL  # sample i is prompt i mod P, whatever the batch
    assert model.decoder(batch).shape == (6, 3, 16, 16)
    with pytest.raises(SolverError, match="not a text-to-image model"):
        with_prompts(load_model(saved("dit"), device="cpu"), PROMPTS)


def test_unsupported_and_incomplete_pipelines_fail_in_one_line(saved, tmp_path):
    import json
    import shutil

    path = saved("sd")
    other = tmp_path / "kandinsky"
    shutil.copytree(path, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ModelLoadError, match="pipeline class 'KandinskyV22Pipeline' .* is not supported"):
        load_model(other, device="cpu")
    broken = tmp_path / "no-vae"
    shutil.copytree(path, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelLoadError, match=r"missing its vae component \(AutoencoderKL; no vae/ folder\)"):
        load_model(broken, device="cpu")


def test_clip_score_is_clips_own_cosine_and_image_metrics_see_decoded_latents(saved, tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    from schedsearch.search.metrics.latent import CLIP_MEAN, CLIP_STD, ClipScore, Decoded
    from schedsearch.search.metrics.suite import lean_metrics, metric_suite
    from schedsearch.search.noise_set import NoiseSet

    clip_dir = lp.save_clip(tmp_path / "clip")
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # the CLIP input size
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ours = ClipScore(clip_dir, PROMPTS)(images, NoiseSet(torch.zeros(6, 1), labels, 0))["clip_score"]
    clip, tok = CLIPModel.from_pretrained(clip_dir), CLIPTokenizer.from_pretrained(clip_dir)
    pixels = ((images + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = clip(**tok(PROMPTS, padding=True, return_tensors="pt"), pixel_values=pixels).logits_per_image
    cosine = logits / clip.logit_scale.exp()  # (image, prompt)
    expected = float((100 * cosine[torch.arange(6), labels].clamp(min=0)).mean())
    assert expected > 1.0 and ours == pytest.approx(expected, rel=1e-4)

    model = with_prompts(load_model(saved("sd"), device="cpu"), PROMPTS)
    metrics, objective = metric_suite(model, 2.0, clip_model=clip_dir, reference_steps=20)
    assert objective == "clip_score"
    [decoded] = [m for m in metrics if isinstance(m, Decoded)]
    assert decoded.names == ("clip_score",)
    assert not any(isinstance(m, Decoded) for m in lean_metrics(metrics, "ref_rmse"))  # no decoding at all
    assert any(isinstance(m, Decoded) for m in lean_metrics(metrics, "clip_score"))
    noises = NoiseSet.draw(model.sample_shape, 6, 0, model.num_classes)
    latents = sample(model, baseline("dpmpp_2m", 4, model), noises.noise, cond=noises.labels, guidance_scale=2.0)
    score = replace(decoded, decoder=replace(model.decoder, batch_size=4))(latents, noises)["clip_score"]  # 2 batches
    direct = ClipScore(clip_dir, PROMPTS)(model.decoder(latents), noises)["clip_score"]
    assert score == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="clip_score needs a text-to-image model"):
        metric_suite(load_model(saved("dit"), device="cpu"), clip_model=clip_dir)
