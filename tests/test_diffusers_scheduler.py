"""``SchedsearchScheduler`` inside a real, unmodified ``DDPMPipeline``: the same samples as ``sample``.

The pipeline (diffusers' own loop, its own noise from a seeded generator) runs a tiny random
UNet saved to disk; our sampler runs the same model, loaded through ``load_model``, from the
same noise. Baselines and random points of the whole USF space (mixed orders, predictions,
estimators, pseudo and implicit correctors, analytical first steps) must agree to 1e-4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from schedsearch.search.space import DECISIONS, SearchSpace, SpaceSpec
from schedsearch.solvers import (
    AnalyticFirstStep,
    Corrector,
    SchedsearchScheduler,
    ScheduleError,
    baseline,
    load_model,
    sample,
)
from schedsearch.solvers.diffusers_scheduler import SchedsearchScheduler as Direct

from tests.helpers import make_tiny_unet

RTOL = 1e-4
BATCH = 3


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """One saved DDPMPipeline per prediction type (unconditional tiny UNet)."""
    unet = make_tiny_unet(seed=3, conditional=False)
    root = tmp_path_factory.mktemp("pipes")
    out = {}
    for pt in ("epsilon", "v_prediction", "sample"):
        cfg = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
               "beta_end": 0.012, "prediction_type": pt}
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**cfg)).save_pretrained(root / pt)
        out[pt] = root / pt
    return out


def _pipeline_samples(pipe: DDPMPipeline, seed: int = 5) -> torch.Tensor:
    """The pipeline's final x (before its own [0, 1] mapping), from its seeded noise."""
    images = pipe(batch_size=BATCH, generator=torch.Generator().manual_seed(seed),
                  num_inference_steps=pipe.scheduler.num_inference_steps, output_type="np").images
    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).double() * 2 - 1


def _ours(model, schedule, seed: int = 5) -> torch.Tensor:
    noise = torch.randn(BATCH, *model.sample_shape, generator=torch.Generator().manual_seed(seed))
    return sample(model, schedule, noise).double().clamp(-1, 1)  # the pipeline clamps to [0, 1]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _usf_schedules(model, count: int):
    """Random legal schedules of the whole decision space at NFE 3–8, with every corrector kind
    and an analytical first step among them."""
    space = SearchSpace(SpaceSpec(nfe=(3, 5, 8), free=frozenset(DECISIONS), implicit_rate=0.4), model.noise_schedule,
                        has_data_mean=True)
    rng = np.random.default_rng(11)
    out = [space.decode(space.random(rng, nfe=(3, 5, 8)[k % 3])) for k in range(count)]
    correctors = {s.corrector for sched in out for s in sched.steps}
    assert Corrector.IMPLICIT in correctors and Corrector.PSEUDO in correctors
    assert any(s.analytic_first_step is AnalyticFirstStep.ZERO for s in out)
    assert any(s.analytic_first_step is AnalyticFirstStep.MEAN for s in out)
    assert len({s.nfe for s in out}) == 3
    return out


@pytest.mark.parametrize("pt", ["epsilon", "v_prediction", "sample"])
def test_baselines_in_a_ddpm_pipeline_match_sample(pipelines, pt):
    model = load_model(pipelines[pt], device="cpu")
    pipe = DDPMPipeline.from_pretrained(pipelines[pt])
    pipe.set_progress_bar_config(disable=True)
    for name, grid, nfe in [("dpmpp_2m", "uniform_lambda", 5), ("dpmpp_3m", "karras", 6), ("unipc_bh2", "quadratic", 4),
                            ("ipndm", "uniform_lambda", 5), ("ddim", "linspace", 3)]:
        schedule = baseline(name, nfe, model, grid=grid)
        pipe.scheduler = SchedsearchScheduler.from_schedule(schedule, pipe.scheduler.config)
        assert len(pipe.scheduler.timesteps) == nfe
        assert _rel(_pipeline_samples(pipe), _ours(model, schedule)) <= RTOL, name


def test_mixed_usf_schedules_in_a_ddpm_pipeline_match_sample(pipelines):
    model = load_model(pipelines["epsilon"], device="cpu")
    mean = 0.1
    from dataclasses import replace

    model = replace(model, data_mean=mean)
    pipe = DDPMPipeline.from_pretrained(pipelines["epsilon"])
    pipe.set_progress_bar_config(disable=True)
    for k, schedule in enumerate(_usf_schedules(model, 12)):
        pipe.scheduler = SchedsearchScheduler.from_schedule(schedule.to_json(), pipe.scheduler.config, data_mean=mean)
        calls = schedule.nfe + (schedule.analytic_first_step is not None)  # the pipeline always calls at t₀
        assert pipe.scheduler.num_inference_steps == calls
        assert _rel(_pipeline_samples(pipe, seed=k), _ours(model, schedule, seed=k)) <= RTOL, schedule.to_json()


def test_a_pipeline_saved_with_the_scheduler_reloads_with_it(pipelines, tmp_path):
    model = load_model(pipelines["v_prediction"], device="cpu")
    schedule = _usf_schedules(model, 12)[1]
    pipe = DDPMPipeline.from_pretrained(pipelines["v_prediction"])
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SchedsearchScheduler.from_schedule(schedule, pipe.scheduler.config, data_mean=0.0)
    before = _pipeline_samples(pipe)
    pipe.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "SchedsearchScheduler" and saved["prediction_type"] == "v_prediction"
    reloaded = DDPMPipeline.from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded.scheduler, Direct)
    assert reloaded.scheduler.schedule == schedule
    assert torch.equal(_pipeline_samples(reloaded), before)
    alone = SchedsearchScheduler.from_pretrained(tmp_path / "saved" / "scheduler")
    assert alone.schedule == schedule


def test_set_timesteps_checks_the_request_against_the_schedule(pipelines):
    model = load_model(pipelines["epsilon"], device="cpu")
    schedule = baseline("dpmpp_2m", 5, model, grid="linspace")  # integer times
    sched = SchedsearchScheduler.from_schedule(schedule, DDPMScheduler().config)
    assert sched.timesteps.dtype == torch.int64
    assert sched.timesteps.tolist() == [int(t) for t in schedule.timesteps[:-1]]
    sched.set_timesteps(timesteps=list(sched.timesteps.tolist()))  # what retrieve_timesteps passes
    sched.set_timesteps(5)
    with pytest.raises(ValueError, match="num_inference_steps: this schedule makes 5 model calls"):
        sched.set_timesteps(20)
    with pytest.raises(ValueError, match="timesteps: .* are not this schedule's"):
        sched.set_timesteps(timesteps=[999, 500, 1])
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="timestep 123 is not one of this schedule's times"):
        sched.step(x, 123, x)
    sched.set_timesteps(5)
    sched.step(x, sched.timesteps[0], x)
    with pytest.raises(ValueError, match="step: expected timestep"):
        sched.step(x, sched.timesteps[3], x)


def test_add_noise_uses_the_models_noise_levels(pipelines):
    sched = SchedsearchScheduler.from_schedule(baseline("ddim", 3, load_model(pipelines["epsilon"]), grid="linspace"),
                                               DDPMScheduler(beta_schedule="squaredcos_cap_v2").config)
    ddpm = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    x0, eps, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999])
    assert torch.allclose(sched.add_noise(x0, eps, t), ddpm.add_noise(x0, eps, t), atol=1e-6)


def test_unusable_schedules_are_refused_with_one_clear_error(pipelines, tmp_path):
    from schedsearch.solvers import ContinuousVPLinear, model_times
    from schedsearch.solvers.baselines import BASELINES

    continuous = baseline("dpmpp_2m", 4, ContinuousVPLinear(), grid="uniform_lambda")
    with pytest.raises(ScheduleError, match="time_domain: SchedsearchScheduler runs discrete_vp"):
        SchedsearchScheduler.from_schedule(continuous)
    with pytest.raises(ScheduleError, match="no schedule"):
        SchedsearchScheduler()
    with pytest.raises(ScheduleError, match="cannot read"):
        SchedsearchScheduler.from_schedule(tmp_path / "missing.json")
    model = load_model(pipelines["epsilon"])
    steps = BASELINES["dpmpp_2m"][0](4, True)
    from schedsearch.solvers import Schedule

    mean_first = Schedule("discrete_vp", model_times("linspace", 5, model.noise_schedule) + (-1.0,), (steps[0], *steps),
                          analytic_first_step=AnalyticFirstStep.MEAN)
    with pytest.raises(ScheduleError, match="'mean' needs the model's data_mean"):
        SchedsearchScheduler.from_schedule(mean_first)


def test_a_refined_schedule_with_learned_weights_runs_in_the_pipeline(pipelines):
    """Refinement's output — fractional timesteps, free steps with learned weights and corrector weights, the
    network told learned model times — runs inside the unmodified pipeline exactly as in ``sample``; no
    diffusers scheduler can run it, and the export says why."""
    from schedsearch.search.refine import RefineSettings, refine
    from schedsearch.solvers.exports import diffusers_export

    model = load_model(pipelines["epsilon"], device="cpu")
    start = baseline("unipc_bh2", 4, model, grid="uniform_lambda")
    settings = RefineSettings(iterations=4, samples=12, batch_size=6, eval_every=2, teacher_steps=12,
                              lr_times=0.01, lr_coefficients=0.001)  # small steps: 4 of them improve on this UNet
    result = refine(model, start, settings)
    assert result.best_iteration > 0
    refined = result.schedule
    assert refined.format == "schedsearch.schedule/2" and refined.timesteps != start.timesteps
    assert any(s.corrector_weights for s in refined.steps)
    told = [s.model_time for s in refined.steps[1:]]
    assert None not in told and all(m != t for m, t in zip(told, refined.timesteps[1:-1]))
    assert not all(float(t).is_integer() for t in refined.timesteps[1:-1])
    pipe = DDPMPipeline.from_pretrained(pipelines["epsilon"])
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SchedsearchScheduler.from_schedule(refined.to_json(), pipe.scheduler.config)
    assert pipe.scheduler.timesteps.tolist()[1:] == pytest.approx(told, abs=1e-3)  # what the UNet is told
    assert _rel(_pipeline_samples(pipe), _ours(model, refined)) <= RTOL
    export = diffusers_export(refined, model.noise_schedule)
    assert export.scheduler is None and "learned weights" in export.reason
