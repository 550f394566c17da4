"""Shared test helpers: a tiny diffusers UNet saved to disk, reference ODE solutions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from schedsearch.solvers import DiffusionModel, GaussianMixture, NoiseSchedule

NUM_CLASSES = 10


def make_tiny_unet(seed: int = 0, conditional: bool = True):
    """A small random diffusers UNet2DModel (8×8, one channel) with every weight non-zero."""
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            num_class_embeds=NUM_CLASSES + 1 if conditional else None,
        )
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return unet.eval()


def save_pipeline(path: Path, unet, scheduler_config: dict) -> Path:
    """Save ``unet`` + a DDPM scheduler as ``DDPMPipeline.save_pretrained`` does."""
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**scheduler_config)).save_pretrained(path)
    (path / "schedsearch_model.json").write_text(json.dumps({"uncond_class_label": NUM_CLASSES}))
    return path


def reference_solution(model: DiffusionModel, x: torch.Tensor, t_from: float, t_to: float, steps: int = 2000) -> torch.Tensor:
    """Probability-flow ODE solved by classical RK4 in float64.

    Variables u = x/α and ρ = σ/α satisfy du/dρ = ε̂; we integrate in s = log ρ,
    du/ds = ρ·ε̂, uniformly in s (to ρ = 0 exactly with a last Euler-free limit step).
    """
    ns: NoiseSchedule = model.noise_schedule
    x = x.double()

    def alpha_sigma(rho: float) -> tuple[float, float, float]:
        t = float(ns.t_of_rho(rho))
        a, s = ns.alpha_sigma(t)
        return t, float(a), float(s)

    def f(u: torch.Tensor, s: float) -> torch.Tensor:
        rho = float(np.exp(s))
        t, a, sig = alpha_sigma(rho)
        eps = model.predict(u * a, t, a, sig).noise
        return rho * eps

    a0, _ = ns.alpha_sigma(t_from)
    a1, _ = ns.alpha_sigma(t_to)
    s0, s1 = float(np.log(ns.rho(t_from))), float(np.log(ns.rho(t_to)))
    u = x / float(a0)
    h = (s1 - s0) / steps
    s = s0
    for _ in range(steps):
        k1 = f(u, s)
        k2 = f(u + 0.5 * h * k1, s + 0.5 * h)
        k3 = f(u + 0.5 * h * k2, s + 0.5 * h)
        k4 = f(u + h * k3, s + h)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        s += h
    return u * float(a1)


def gaussian_flow(mixture: GaussianMixture, ns: NoiseSchedule, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
    """Exact probability-flow map of a single Gaussian component: affine in x."""
    assert mixture.weights.numel() == 1
    mu, sd = mixture.means[0], mixture.stds[0]
    a0, s0 = (float(v) for v in ns.alpha_sigma(t_from))
    a1, s1 = (float(v) for v in ns.alpha_sigma(t_to))
    scale = torch.sqrt(a1**2 * sd**2 + s1**2) / torch.sqrt(a0**2 * sd**2 + s0**2)
    return a1 * mu + scale * (x - a0 * mu)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def trial_fingerprint(trials) -> list[tuple]:
    """What must match between two runs of one seeded search: every trial's number, schedule, stage,
    fidelity, state and objective (to 12 digits: stores round-trip floats through JSON)."""
    return [(t.number, t.schedule_hash, t.stage.value, t.fidelity, t.state.value, round(t.objective or 0.0, 12))
            for t in trials]


def varied_schedules(model: DiffusionModel, count: int, seed: int) -> list:
    """``count`` random schedules of the search space (derivatives on any earlier points, correctors, analytic
    first steps; NFE 3–12), every baseline at NFE 3, 6 and 10, and one schedule of free steps."""
    from schedsearch.search.space import SearchSpace, SpaceSpec
    from schedsearch.solvers import baseline
    from schedsearch.solvers.baselines import BASELINES
    from schedsearch.solvers.parameters import ScheduleParameters

    space = SearchSpace(SpaceSpec(nfe=(3, 5, 8, 12)), model.noise_schedule, has_data_mean=True)
    rng = np.random.default_rng(seed)
    out = [space.decode(space.random(rng)) for _ in range(count)]
    out += [baseline(name, nfe, model) for name in BASELINES for nfe in (3, 6, 10)]
    out.append(ScheduleParameters(baseline("unipc_bh2", 6, model), model.noise_schedule).to_schedule())
    assert any(any(st.corrector.value == "implicit" for st in s.steps) for s in out)
    assert any(s.analytic_first_step is not None for s in out)
    assert out[-1].steps[-1].estimator.value == "free"
    return out
