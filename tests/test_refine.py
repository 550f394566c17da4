"""Learned refinement: the differentiable plan, free steps (schedule format /2), the training loop, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from schedsearch.search.cli import main
from schedsearch.search.refine import TRAIN_SEED, RefineSettings, refine
from schedsearch.solvers import (
    BASELINES,
    EDM,
    ContinuousVPCosine,
    ContinuousVPLinear,
    DiscreteVP,
    GaussianMixture,
    RectifiedFlow,
    Schedule,
    ScheduleError,
    baseline,
    compile_plan,
    load_model,
    sample,
)
from schedsearch.solvers.parameters import RefineTargets, ScheduleParameters
from schedsearch.solvers.plan import differentiable_plan
from schedsearch.solvers.sampler import integrate

FAMILIES = [DiscreteVP.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
            ContinuousVPLinear(), ContinuousVPCosine(), EDM(), RectifiedFlow()]


def _mixture_model(noise_schedule):
    return GaussianMixture.ring(components=4, radius=1.5).as_model(noise_schedule)


def _noise(model, n=6, seed=0):
    return torch.randn(n, *model.sample_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("ns", FAMILIES, ids=lambda ns: type(ns).__name__)
def test_torch_noise_schedules_equal_the_numpy_ones(ns):
    t = np.concatenate([np.linspace(ns.t_min, ns.t_max, 29), [ns.t_min + 0.3137 * (ns.t_max - ns.t_min)]])
    tt = torch.tensor(t)
    np.testing.assert_allclose(ns.lambda_torch(tt).numpy(), ns.lambda_(t), rtol=1e-13, atol=1e-13)
    for ours, theirs in zip(ns.alpha_sigma_torch(tt), ns.alpha_sigma(t)):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-13, atol=1e-15)
    data = torch.tensor([ns.data_time], dtype=torch.float64)  # σ = 0 exactly at the data time
    alpha, sigma = ns.alpha_sigma_torch(data)
    assert float(sigma) == 0.0 and float(ns.lambda_torch(data)) == np.inf


@pytest.mark.parametrize("ns", FAMILIES, ids=lambda ns: type(ns).__name__)
def test_the_differentiable_plan_equals_the_compiled_plan_on_every_baseline(ns):
    model = _mixture_model(ns)
    checked = 0
    for name in BASELINES:
        for nfe in (3, 6, 10):
            schedule = baseline(name, nfe, model)
            ref, ours = compile_plan(schedule, ns), differentiable_plan(schedule, ns)
            for a, b in zip(ref.steps, ours.steps):
                assert float(b.time) == pytest.approx(a.time, abs=1e-12)
                for u, v in ((a.predictor, b.predictor), (a.corrector, b.corrector)):
                    if u is None:
                        assert v is None
                        continue
                    assert [j for j, _ in u.weights] == [j for j, _ in v.weights]
                    assert float(v.ratio) == pytest.approx(u.ratio, rel=1e-12, abs=1e-12)
                    for (_, w), (_, x) in zip(u.weights, v.weights):
                        assert float(x) == pytest.approx(w, rel=1e-12, abs=1e-12), (name, nfe)
            assert ref.last_use == ours.last_use
            checked += 1
    assert checked == 3 * len(BASELINES)


def test_gradcheck_of_the_sampler_in_times_relaxations_and_free_weights():
    """The sampler's output on an exact Gaussian-mixture model is differentiable in every learned number."""
    model = _mixture_model(ContinuousVPLinear())
    schedule = baseline("unipc_bh2", 4, model)  # orders 1-2, pseudo correctors, a step to the data
    noise = _noise(model, n=3)
    params = ScheduleParameters(schedule, model.noise_schedule)
    relax_keys, weight_keys = list(params.relaxations), list(params.weight_offsets)
    corrector_keys = list(params.corrector_offsets)
    assert relax_keys and weight_keys and corrector_keys

    def run(times, relax, weights, corrector):
        full = torch.cat([torch.tensor(schedule.timesteps[:1], dtype=torch.float64), times,
                          torch.tensor(schedule.timesteps[-1:], dtype=torch.float64)])
        relaxations = {int(relax_keys[0]): [relax]}
        plan = differentiable_plan(schedule, model.noise_schedule, full, relaxations,
                                   {int(weight_keys[1]): weights}, {int(corrector_keys[0]): corrector})
        return integrate(model, plan, noise)

    inner = torch.tensor(schedule.timesteps[1:-1], dtype=torch.float64, requires_grad=True)
    relax = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    steps = schedule.steps
    weights = torch.zeros(len(steps[int(weight_keys[1])].points), dtype=torch.float64, requires_grad=True)
    corrector = torch.zeros(len(steps[int(corrector_keys[0])].points) + 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (inner, relax, weights, corrector), eps=1e-6, atol=1e-5)
    with torch.inference_mode():  # at the schedule's own values the tensor plan samples what sample() does
        out = run(inner.detach(), relax.detach(), weights.detach(), corrector.detach())
    assert torch.allclose(out, sample(model, schedule, noise), atol=1e-12)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_parameters_at_their_start_export_the_same_sampler(name):
    model = _mixture_model(ContinuousVPLinear())
    schedule = baseline(name, 5, model)
    free = ScheduleParameters(schedule, model.noise_schedule).to_schedule()
    assert free.format == "schedsearch.schedule/2" and all(s.estimator.value == "free" for s in free.steps)
    assert Schedule.from_json(free.to_json()) == free
    noise = _noise(model)
    assert torch.allclose(sample(model, free, noise), sample(model, schedule, noise), atol=1e-7)
    kept = ScheduleParameters(schedule, model.noise_schedule, RefineTargets(free_weights=False)).to_schedule()
    assert kept.format == "schedsearch.schedule/1"
    assert torch.allclose(sample(model, kept, noise), sample(model, schedule, noise), atol=1e-7)


def test_the_monotone_reparameterisation_keeps_times_legal_for_any_logits():
    model = _mixture_model(EDM())
    schedule = baseline("dpmpp_2m", 6, model, grid="karras")
    params = ScheduleParameters(schedule, model.noise_schedule)
    assert torch.allclose(params.times(), torch.tensor(schedule.timesteps, dtype=torch.float64), rtol=1e-9)
    with torch.no_grad():
        params.time_logits.copy_(torch.randn(params.time_logits.shape, generator=torch.Generator().manual_seed(3)) * 3)
    times = params.times()
    assert times[0] == schedule.timesteps[0] and times[-1] == schedule.timesteps[-1] == 0.0  # ends at the data
    times = times.detach()
    assert bool((times[:-2].diff() < 0).all()) and float(times[-2]) >= EDM().t_min
    params.to_schedule().check_for(model.noise_schedule)


def test_schedules_of_format_1_are_unchanged_and_free_steps_are_validated():
    model = _mixture_model(ContinuousVPLinear())
    schedule = baseline("dpmpp_3m", 5, model)
    assert json.loads(schedule.to_json())["format"] == "schedsearch.schedule/1"  # hashes of stored trials hold
    free = json.loads(ScheduleParameters(schedule, model.noise_schedule).to_schedule().to_json())
    bad = json.loads(json.dumps(free))
    bad["steps"][2]["weights"] = bad["steps"][2]["weights"][:1]
    with pytest.raises(ScheduleError, match=r"steps\[2\]\.weights: a free step needs one weight per point \[0, -1, -2\]"):
        Schedule.from_dict(bad)
    bad = json.loads(json.dumps(free))
    bad["format"] = "schedsearch.schedule/1"
    with pytest.raises(ScheduleError, match=r"steps\[0\]\.weights: free weights need format 'schedsearch.schedule/2'"):
        Schedule.from_dict(bad)
    bad = json.loads(json.dumps(free))
    bad["steps"][1]["weights"][0][1] = "x"
    with pytest.raises(ScheduleError, match=r"steps\[1\]\.weights\[0\]: 'x' is not a number"):
        Schedule.from_dict(bad)
    bad = json.loads(json.dumps(free))
    del bad["steps"][1]["estimator"]
    with pytest.raises(ScheduleError, match=r"steps\[1\]\.weights: only 'free' steps carry weights"):
        Schedule.from_dict(bad)
    corrected = json.loads(ScheduleParameters(baseline("unipc_bh1", 4, model), model.noise_schedule)
                           .to_schedule().to_json())
    del corrected["steps"][0]["corrector_weights"]
    with pytest.raises(ScheduleError, match=r"steps\[0\]\.corrector_weights: a free step with a corrector needs"):
        Schedule.from_dict(corrected)


def test_refinement_beats_its_start_on_held_out_noise():
    """On an exact mixture model, refining a 4-NFE DPM-Solver++ schedule lowers the distance to the teacher
    on noise it never trained on, and the trained numbers all move."""
    model = load_model("builtin:gmm-ring")
    schedule = baseline("dpmpp_2m", 4, model)
    settings = RefineSettings(iterations=60, samples=200, batch_size=100, eval_every=5)
    assert settings.seed == TRAIN_SEED and TRAIN_SEED not in (0, 1)  # apart from the search and held-out seeds
    seen = []
    result = refine(model, schedule, settings, lambda i, train, val: seen.append(i))
    assert seen == list(range(1, result.iterations + 1))
    assert result.loss < 0.7 * result.initial_loss and result.best_iteration > 0
    refined = result.schedule
    assert refined.provenance["refined"]["train_seed"] == TRAIN_SEED
    assert refined.timesteps != schedule.timesteps and refined.nfe == schedule.nfe
    held_out = _noise(model, n=400, seed=1)
    teacher = sample(model, baseline("dpmpp_3m", 100, model), held_out)

    def rmse(s):
        return float((sample(model, s, held_out) - teacher).pow(2).mean().sqrt())

    assert rmse(refined) < 0.85 * rmse(schedule)


def test_refine_cli_writes_a_schedule_that_sample_runs(tmp_path, capsys):
    start, out = tmp_path / "start.json", tmp_path / "refined.json"
    assert main(["baseline", "unipc_bh2", "--nfe", "4", "--model", "builtin:gmm-ring", "-o", str(start)]) == 0
    assert main(["refine", str(start), "--model", "builtin:gmm-ring", "-o", str(out), "--iterations", "20",
                 "--samples", "100", "-q"]) == 0
    said = capsys.readouterr()
    assert "refined NFE 4: validation loss" in said.out and "training draws (seed 2)" in said.err
    refined = Schedule.from_json(out.read_text())
    assert refined.format == "schedsearch.schedule/2"
    assert main(["sample", str(out), "--model", "builtin:gmm-ring", "-n", "8", "--out", str(tmp_path / "x.pt")]) == 0
    assert torch.load(tmp_path / "x.pt").shape == (8, 2)


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/r.txt"], "-o/--output {tmp}/r.txt: unknown file type '.txt' (use json)"),
    (["-o", "{tmp}/r.json", "--model", "builtin:gmm-8d"],
     "time_domain: schedule is 'discrete_vp' but the model uses 'continuous_vp'"),
    (["-o", "{tmp}/r.json", "--no-times", "--no-relaxations", "--no-free-weights"],
     "refinement: nothing to learn"),
    (["-o", "{tmp}/r.json", "--lr-times", "0"], "refine: learning rates must be positive"),
])
def test_refine_cli_refuses_bad_input_in_one_line(tmp_path, capsys, args, message):
    start = tmp_path / "start.json"
    assert main(["baseline", "dpmpp_2m", "--nfe", "4", "--model", "builtin:gmm-ring", "-o", str(start)]) == 0
    capsys.readouterr()
    argv = ["refine", str(start), "--model", "builtin:gmm-ring", "-q"] + [a.format(tmp=tmp_path) for a in args]
    if "--model" in args:
        argv = ["refine", str(start), "-q"] + [a.format(tmp=tmp_path) for a in args]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(tmp=tmp_path) in err[0], err
    assert not (tmp_path / "r.json").exists()
