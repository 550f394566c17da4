"""Exports fed to diffusers' own schedulers reproduce the schedule; mixed schedules are named as such.

``--diffusers`` settings go into ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler``,
``--sigmas`` into ``EulerDiscreteScheduler(sigmas=…)`` (first-order data prediction is Euler in
k-diffusion's variables); each loop runs the raw tiny UNet and must match ``sample``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from schedsearch.solvers import (
    EDM,
    ContinuousVPLinear,
    Corrector,
    Derivative,
    RectifiedFlow,
    Schedule,
    Step,
    baseline,
    load_model,
    sample,
)
from schedsearch.solvers.exports import diffusers_export, sigmas
from schedsearch.storage import NewTrial, TrialStore

from tests.helpers import NUM_CLASSES, save_pipeline

RTOL = 1e-4
CFG = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
       "prediction_type": "v_prediction"}


@pytest.fixture(scope="module")
def model_and_unet(tiny_unet, tmp_path_factory):
    path = save_pipeline(tmp_path_factory.mktemp("exports") / "pipe", tiny_unet, CFG)
    return load_model(path, device="cpu"), tiny_unet


def _inputs(n: int = 4):
    g = torch.Generator().manual_seed(9)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _loop(unet, scheduler, noise, labels):
    x = noise.clone() * scheduler.init_noise_sigma
    with torch.inference_mode():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t, class_labels=labels).sample
            x = scheduler.step(out, t, x).prev_sample
    return x


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _run_export(model, unet, schedule) -> torch.Tensor:
    export = diffusers_export(schedule, model.noise_schedule)
    assert export.scheduler is not None, export.reason
    sched = getattr(diffusers, export.scheduler).from_config(CFG, **export.settings)
    sched.set_timesteps(**export.set_timesteps)
    assert [float(t) for t in sched.timesteps.tolist()] == export.timesteps
    noise, labels = _inputs()
    return _rel(_loop(unet, sched, noise, labels), sample(model, schedule, noise, cond=labels))


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "dpmpp_3m", "dpm_solver_2", "dpm_solver_3"])
def test_diffusers_export_of_dpm_solvers_reproduces_the_schedule(model_and_unet, name):
    model, unet = model_and_unet
    times = [999, 810, 604, 377, 190, 45]
    schedule = baseline(name, len(times), model, grid=times)
    export = diffusers_export(schedule, model.noise_schedule)
    assert export.solver == name and export.set_timesteps == {"timesteps": times}
    assert _run_export(model, unet, schedule) <= RTOL
    assert f"timesteps = {times}" in export.render() and "DPMSolverMultistepScheduler.from_config" in export.render()


@pytest.mark.parametrize("name", ["unipc_bh2", "unip_bh2"])
def test_diffusers_export_of_unipc_names_its_spacing(model_and_unet, name):
    model, unet = model_and_unet
    schedule = baseline(name, 6, model, grid="linspace")
    export = diffusers_export(schedule, model.noise_schedule)
    assert export.settings["timestep_spacing"] == "linspace" and export.set_timesteps == {"num_inference_steps": 6}
    assert _run_export(model, unet, schedule) <= RTOL
    odd = baseline(name, 4, model, grid=[999, 700, 333, 20])  # custom times: UniPC cannot take them
    assert "UniPCMultistepScheduler takes no custom timesteps" in diffusers_export(odd, model.noise_schedule).reason


def test_diffusers_export_says_plainly_when_no_scheduler_can(model_and_unet):
    model, _ = model_and_unet
    base = baseline("dpmpp_3m", 5, model, grid=[999, 700, 450, 200, 40])
    steps = list(base.steps)
    steps[1] = Step("noise", 2, corrector=Corrector.IMPLICIT)
    steps[2] = Step("data", 3, derivatives=(Derivative((-1, -2), 0.8), Derivative((-1, -2))))
    mixed = replace(base, steps=tuple(steps))
    export = diffusers_export(mixed, model.noise_schedule)
    assert export.scheduler is None
    assert "not those of one diffusers solver" in export.reason and "implicit correctors" in export.reason
    assert "SchedsearchScheduler.from_schedule" in export.render()
    fractional = baseline("dpmpp_2m", 5, model, grid="uniform_lambda")
    assert "not integers" in diffusers_export(fractional, model.noise_schedule).reason
    assert "diffusers has no multistep iPNDM" in diffusers_export(baseline("ipndm", 5, model), model.noise_schedule).reason
    continuous = baseline("dpmpp_2m", 5, ContinuousVPLinear())
    assert "continuous_vp" in diffusers_export(continuous, ContinuousVPLinear()).reason


@pytest.mark.parametrize("grid", [[999, 800, 550, 300, 120, 20], "uniform_lambda"])
def test_sigmas_fed_to_eulers_scheduler_reproduce_the_schedule(model_and_unet, grid):
    model, unet = model_and_unet
    schedule = baseline("ddim", 6, model, grid=grid)  # first-order data prediction = Euler in σ/α
    sig = sigmas(schedule, model.noise_schedule)
    assert sig[-1] == 0.0 and all(a > b for a, b in itertools.pairwise(sig))
    # With its default linspace spacing diffusers scales the initial noise by σ_max (as k-diffusion does)
    # instead of √(σ_max² + 1), the factor that makes x at t₀ standard normal; "leading" uses the exact one.
    sched = diffusers.EulerDiscreteScheduler.from_config(CFG, timestep_spacing="leading")
    sched.set_timesteps(sigmas=sig)
    noise, labels = _inputs()
    expected = _loop(unet, sched, noise, labels)
    assert _rel(expected, sample(model, schedule, noise, cond=labels)) <= RTOL


def test_sigmas_follow_each_families_convention():
    edm = baseline("dpmpp_2m", 4, EDM())
    assert sigmas(edm, EDM()) == pytest.approx([*edm.timesteps[:-1], 0.0])
    flow = baseline("dpmpp_2m", 4, RectifiedFlow())
    assert sigmas(flow, RectifiedFlow()) == pytest.approx(list(flow.timesteps))
    vp = baseline("dpmpp_2m", 4, ContinuousVPLinear())
    alpha, sigma = ContinuousVPLinear().alpha_sigma(np.array(vp.timesteps[:-1]))
    assert sigmas(vp, ContinuousVPLinear())[:-1] == pytest.approx(list(sigma / alpha))


def test_export_cli_prints_diffusers_settings_and_sigmas(tmp_path):
    model = load_model("builtin:gmm-ring")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = TrialStore.open(url)
    search = store.create_search("ring", {"nfe": [4, 5]}, "builtin:gmm-ring", "mmd")
    fixed = baseline("dpmpp_2m", 4, model, grid=[999, 700, 400, 100])
    mixed = replace(baseline("dpmpp_2m", 5, model, grid=[999, 700, 400, 100, 30]),
                    steps=(Step("data", 1), Step("noise", 2), Step("data", 2), Step("data", 3), Step("data", 1)))
    store.record_trials(search, [(NewTrial(s.to_dict(), s.canonical_hash(), s.nfe), {"mmd": v}, v, None)
                                 for s, v in ((fixed, 0.2), (mixed, 0.1))])
    store.close()
    script = Path(sys.executable).with_name("schedsearch")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), "export", "ring", "--db", url, *args], capture_output=True, text=True, check=False,
                              timeout=120)

    out = run("--nfe", "4", "--diffusers", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["scheduler"] == "DPMSolverMultistepScheduler" and data["set_timesteps"] == {"timesteps": [999, 700, 400, 100]}
    assert data["settings"] == {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero"}
    text = run("--diffusers").stdout  # the best overall: the mixed one
    assert "no diffusers scheduler reproduces this schedule" in text and "SchedsearchScheduler" in text
    sig = json.loads(run("--nfe", "4", "--sigmas").stdout)
    assert sig == pytest.approx(sigmas(Schedule.from_dict(fixed.to_dict()), model.noise_schedule))
    both = run("--diffusers", "--sigmas")
    assert both.returncode != 0 and "not allowed with" in both.stderr
