"""Model adapters and loading: parameterisations, guidance, diffusers directories, hub ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from schedsearch.solvers import (
    EDM,
    ContinuousVPLinear,
    DiscreteVP,
    GaussianMixture,
    ModelLoadError,
    RectifiedFlow,
    SolverError,
    baseline,
    from_callable,
    load_model,
    sample,
)
from tests.helpers import make_tiny_unet, save_pipeline

MIX = GaussianMixture.random(3, 4, torch.Generator().manual_seed(5), spread=1.0)


def _wrap(ns, parameterization: str):
    """The exact mixture denoiser re-expressed in another parameterisation."""
    model = MIX.as_model(ns)

    def network(x, t, cond):
        alpha, sigma = (torch.as_tensor(v, dtype=x.dtype)[:, None] for v in ns.alpha_sigma(t.numpy()))
        x0 = model.network(x, t, cond)
        eps = (x - alpha * x0) / sigma
        return {"eps": eps, "x0": x0, "edm": x0, "v": alpha * eps - sigma * x0, "flow": eps - x0}[parameterization]

    return from_callable(network, parameterization, ns, (3,), dtype=torch.float64)


@pytest.mark.parametrize(
    "ns,kinds",
    [
        (DiscreteVP.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
         ["eps", "x0", "v"]),
        (ContinuousVPLinear(), ["eps", "x0", "v"]),
        (EDM(), ["eps", "edm"]),
        (RectifiedFlow(), ["eps", "x0", "flow"]),
    ],
    ids=["discrete", "continuous", "edm", "flow"],
)
def test_every_parameterisation_gives_the_same_samples(ns, kinds):
    noise = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = noise * float(ns.alpha_sigma(ns.t_max)[1])
    for name in ("dpmpp_2m", "unipc_bh2", "dpm_solver_3"):
        schedule = baseline(name, 6, ns)
        results = [sample(_wrap(ns, kind), schedule, noise) for kind in kinds]
        for other in results[1:]:
            torch.testing.assert_close(other, results[0], rtol=1e-9, atol=1e-9)


def test_flow_from_pure_noise_with_data_prediction():
    """At t = 1 a flow model has α = 0: data prediction steps from there, noise prediction cannot."""
    ns = RectifiedFlow(t_hi=1.0)
    model = _wrap(ns, "flow")
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(model, baseline("ddim", 8, ns, grid="uniform_t"), noise)
    assert torch.isfinite(out).all()
    with pytest.raises(SolverError, match="noise prediction cannot start where α = 0"):
        sample(model, baseline("dpm_solver_1", 8, ns, grid="uniform_t"), noise)
    with pytest.raises(SolverError, match="steps.1.: a finite difference uses a point where λ is infinite"):
        sample(model, baseline("dpmpp_2m", 8, ns, grid="uniform_t"), noise)
    with pytest.raises(SolverError, match="grid 'uniform_lambda' needs finite λ"):
        baseline("dpmpp_2m", 8, ns, grid="uniform_lambda")


def test_guidance_needs_condition_and_uncond():
    model = MIX.as_model(ContinuousVPLinear())
    noise = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(SolverError, match="guidance_scale needs conditioning"):
        sample(model, baseline("ddim", 3, model), noise, guidance_scale=2.0)


def test_classifier_free_guidance_on_a_toy_network():
    """out_u + s·(out_c − out_u) (diffusers' convention), both branches in one call with cond first."""
    calls = []

    def network(x, t, cond):
        calls.append((x.shape[0], cond.clone()))
        return x + 0.01 * t[:, None] + 100.0 * cond.to(x.dtype)[:, None]  # known output per label

    model = from_callable(network, "eps", ContinuousVPLinear(), (2,), dtype=torch.float64, uncond=torch.tensor(7))
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64)
    labels = torch.tensor([1, 3])
    t = 0.4
    out_c = x + 0.004 + 100.0 * labels.double()[:, None]
    out_u = x + 0.004 + 700.0
    for scale in (2.5, 0.0, -1.5):
        calls.clear()
        guided = model.output(x, t, labels, scale)
        torch.testing.assert_close(guided, out_u + scale * (out_c - out_u), rtol=0, atol=1e-9)
        assert [n for n, _ in calls] == [4]  # one batched call: one model evaluation
        assert calls[0][1].tolist() == [1, 3, 7, 7]  # conditional half first, then the null label
    torch.testing.assert_close(model.output(x, t, labels, 0.0), out_u, rtol=0, atol=1e-9)  # s = 0: unconditional
    for scale in (None, 1.0):  # no guidance: the conditional branch alone, one call of the plain batch
        calls.clear()
        torch.testing.assert_close(model.output(x, t, labels, scale), out_c, rtol=0, atol=1e-9)
        assert [n for n, _ in calls] == [2]
    eps = model.predict(x, t, 0.6, 0.8, labels, 2.5).noise
    torch.testing.assert_close(eps, out_u + 2.5 * (out_c - out_u), rtol=0, atol=1e-9)  # predict uses the guided output


def test_guidance_with_dict_conditioning_stacks_each_entry():
    """Text-style conditioning (a dict of tensors): each entry is stacked cond-then-uncond."""

    def network(x, t, cond):
        return x * 0 + cond["emb"].sum(dim=(1, 2))[:, None] + cond["pooled"][:, :1]

    uncond = {"emb": torch.zeros(1, 3, 2, dtype=torch.float64), "pooled": torch.full((4,), -2.0, dtype=torch.float64)}
    model = from_callable(network, "eps", ContinuousVPLinear(), (3,), dtype=torch.float64, uncond=uncond)
    cond = {"emb": torch.ones(2, 3, 2, dtype=torch.float64), "pooled": torch.full((2, 4), 5.0, dtype=torch.float64)}
    x = torch.zeros(2, 3, dtype=torch.float64)
    out_c, out_u = 6.0 + 5.0, 0.0 - 2.0
    torch.testing.assert_close(model.output(x, 0.5, cond, 3.0), torch.full((2, 3), out_u + 3.0 * (out_c - out_u),
                                                                          dtype=torch.float64))


def test_noise_shape_is_checked():
    model = load_model("builtin:gmm-ring")
    with pytest.raises(SolverError, match=r"noise: shape \(4, 3\) does not match"):
        sample(model, baseline("ddim", 3, model), torch.zeros(4, 3))


def test_bare_unet_directory_with_scheduler_beside(tmp_path, tiny_unet):
    pipe = save_pipeline(tmp_path / "pipe", tiny_unet, {"beta_schedule": "linear", "prediction_type": "epsilon"})
    from_pipeline = load_model(pipe, device="cpu")
    from_unet_dir = load_model(pipe / "unet", device="cpu")  # finds ../scheduler/
    flat = tmp_path / "flat"
    tiny_unet.save_pretrained(flat)
    (flat / "scheduler_config.json").write_text((pipe / "scheduler" / "scheduler_config.json").read_text())
    from_flat = load_model(flat, device="cpu")
    assert from_pipeline.sample_shape == from_unet_dir.sample_shape == from_flat.sample_shape == (1, 8, 8)
    assert from_pipeline.uncond is not None  # from schedsearch_model.json
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2, 3])
    s = baseline("dpmpp_2m", 4, from_pipeline)
    ref = sample(from_pipeline, s, noise, cond=labels)
    torch.testing.assert_close(sample(from_unet_dir, s, noise, cond=labels), ref)
    torch.testing.assert_close(sample(from_flat, s, noise, cond=labels), ref)


def test_unet2d_condition_model_takes_encoder_states(tmp_path):
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8, attention_head_dim=4, norm_num_groups=8,
        )
    save_pipeline(tmp_path / "txt", unet, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    uncond = torch.zeros(1, 3, 8)
    model = load_model(tmp_path / "txt", device="cpu", uncond=uncond)
    text = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    s = baseline("unipc_bh2", 4, model, grid="linspace")
    guided = sample(model, s, noise, cond=text, guidance_scale=3.0)
    plain = sample(model, s, noise, cond=text)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)


def test_hub_id_resolves_through_the_huggingface_cache(tmp_path, tiny_unet):
    """A hub id goes through diffusers/huggingface_hub; here from a local cache, offline."""
    snapshot = tmp_path / "hub" / "models--schedsearch--tiny-ddpm" / "snapshots" / ("0" * 40)
    save_pipeline(snapshot, tiny_unet, {"beta_schedule": "linear"})
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    code = textwrap.dedent(
        """
        from schedsearch.solvers import load_model
        m = load_model("schedsearch/tiny-ddpm", device="cpu")
        print(m.name, m.sample_shape, type(m.noise_schedule).__name__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "schedsearch/tiny-ddpm (1, 8, 8) DiscreteVP" in out.stdout
    missing = code.replace("schedsearch/tiny-ddpm", "schedsearch/absent")
    out = subprocess.run([sys.executable, "-c", missing], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "hub id 'schedsearch/absent' is not in the local Hugging Face cache" in out.stderr
    # no network and no HF_HUB_OFFLINE: the cache still serves, without retries
    env = {**env, "HF_ENDPOINT": "http://127.0.0.1:1"}
    env.pop("HF_HUB_OFFLINE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "schedsearch/tiny-ddpm (1, 8, 8) DiscreteVP" in out.stdout and "Retrying" not in out.stderr


def test_loading_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="path not found: ./nowhere"):
        load_model("./nowhere")
    with pytest.raises(ModelLoadError, match="unknown builtin 'cats'"):
        load_model("builtin:cats")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no UNet config.json"):
        load_model(tmp_path / "empty")
    unet_dir = tmp_path / "unet_only"
    make_tiny_unet().save_pretrained(unet_dir)
    with pytest.raises(ModelLoadError, match="no scheduler config found"):
        load_model(unet_dir)
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    (tmp_path / "weird" / "scheduler_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="holds a 'VQModel'"):
        load_model(tmp_path / "weird")


def test_builtins_load_and_sample():
    for ref in ("builtin:gmm-ring", "builtin:gmm-8d"):
        model = load_model(ref)
        noise = torch.randn(5, *model.sample_shape, dtype=torch.float64)
        out = sample(model, baseline("unipc_bh2", 5, model), noise)
        assert out.shape == noise.shape and torch.isfinite(out).all()


def test_cuda_device_is_used_when_present():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    model = load_model("builtin:gmm-ring", device="cuda")
    out = sample(model, baseline("dpmpp_2m", 5, model), torch.randn(8, 2, dtype=torch.float64))
    assert out.device.type == "cuda"

