"""Learned refinement: the differentiable plan, free steps (schedule format /2), the training loop, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from schedsearch.search.cli import main
from schedsearch.search.refine import TRAIN_SEED, RefineSettings, refine
from schedsearch.solvers import (
    BASELINES,
    AnalyticFirstStep,
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
from schedsearch.solvers.exports import diffusers_export
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


def test_gradcheck_of_the_sampler_in_times_relaxations_free_weights_and_model_times():
    """The sampler's output on an exact Gaussian-mixture model is differentiable in every learned number."""
    model = _mixture_model(ContinuousVPLinear())
    schedule = baseline("unipc_bh2", 4, model)  # orders 1-2, pseudo correctors, a step to the data
    noise = _noise(model, n=3)
    params = ScheduleParameters(schedule, model.noise_schedule)
    relax_keys, weight_keys = list(params.relaxations), list(params.weight_offsets)
    corrector_keys = list(params.corrector_offsets)
    assert relax_keys and weight_keys and corrector_keys

    def run(times, relax, weights, corrector, shift):
        full = torch.cat([torch.tensor(schedule.timesteps[:1], dtype=torch.float64), times,
                          torch.tensor(schedule.timesteps[-1:], dtype=torch.float64)])
        relaxations = {int(relax_keys[0]): [relax]}
        plan = differentiable_plan(schedule, model.noise_schedule, full, relaxations,
                                   {int(weight_keys[1]): weights}, {int(corrector_keys[0]): corrector},
                                   {2: full[2] + shift})
        return integrate(model, plan, noise)

    inner = torch.tensor(schedule.timesteps[1:-1], dtype=torch.float64, requires_grad=True)
    relax = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    steps = schedule.steps
    weights = torch.zeros(len(steps[int(weight_keys[1])].points), dtype=torch.float64, requires_grad=True)
    corrector = torch.zeros(len(steps[int(corrector_keys[0])].points) + 1, dtype=torch.float64, requires_grad=True)
    shift = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (inner, relax, weights, corrector, shift), eps=1e-6, atol=1e-5)
    with torch.inference_mode():  # at the schedule's own values the tensor plan samples what sample() does
        out = run(inner.detach(), relax.detach(), weights.detach(), corrector.detach(), shift.detach())
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
    assert kept.format == "schedsearch.schedule/1"  # model times at their start are the points' own: not written
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


def test_model_times_tell_the_network_another_time_and_are_validated():
    """A step's model time is what the network is told at its point; the solver's coefficients keep the
    point's own time. Format /2 only, in the model's range, none where an analytical first step makes no call."""
    model = _mixture_model(ContinuousVPLinear())
    schedule = baseline("dpmpp_2m", 4, model)
    told = (schedule.timesteps[2] + schedule.timesteps[3]) / 2
    steps = list(schedule.steps)
    steps[2] = replace(steps[2], model_time=told)
    shifted = replace(schedule, steps=tuple(steps))
    assert shifted.format == "schedsearch.schedule/2" and Schedule.from_json(shifted.to_json()) == shifted
    assert shifted.canonical_hash() != schedule.canonical_hash()
    ours, ref = compile_plan(shifted, model.noise_schedule), compile_plan(schedule, model.noise_schedule)
    assert ours.steps[2].time == told and ours.steps[2].node == ref.steps[2].node
    assert ours.steps[2].predictor == ref.steps[2].predictor and ours.steps[1].time == ref.steps[1].time
    noise = _noise(model)
    calls = []
    network = model.network

    def spy(x, t, cond):
        calls.append(float(t[0]))
        return network(x, t, cond)

    spied = replace(model, network=spy)
    assert not torch.allclose(sample(spied, shifted, noise), sample(model, schedule, noise))
    assert calls == pytest.approx([schedule.timesteps[0], schedule.timesteps[1], told, schedule.timesteps[3]])
    same = replace(schedule, steps=tuple(replace(s, model_time=t) for s, t in zip(schedule.steps, schedule.timesteps)))
    assert torch.equal(sample(model, same, noise), sample(model, schedule, noise))
    data = json.loads(shifted.to_json())
    data["format"] = "schedsearch.schedule/1"
    with pytest.raises(ScheduleError, match=r"steps\[2\]\.model_time: model times need format 'schedsearch.schedule/2'"):
        Schedule.from_dict(data)
    data = json.loads(shifted.to_json())
    data["steps"][2]["model_time"] = "soon"
    with pytest.raises(ScheduleError, match=r"steps\[2\]\.model_time: 'soon' is not a number"):
        Schedule.from_dict(data)
    out_of_range = replace(schedule, steps=tuple(replace(s, model_time=2.0) if i == 1 else s
                                                 for i, s in enumerate(schedule.steps)))
    with pytest.raises(ScheduleError, match=r"steps\[1\]\.model_time: 2 is outside the model's range"):
        out_of_range.check_for(model.noise_schedule)
    with pytest.raises(ScheduleError, match=r"steps\[0\]\.model_time: an analytical first step makes no model call"):
        Schedule(schedule.time_domain, schedule.timesteps, (replace(steps[0], model_time=0.5), *steps[1:]),
                 analytic_first_step=AnalyticFirstStep.ZERO)
    discrete = _mixture_model(FAMILIES[0])
    base = baseline("dpmpp_2m", 4, discrete)
    mid = (base.timesteps[1] + base.timesteps[2]) / 2
    told_base = replace(base, steps=tuple(replace(s, model_time=mid) if i == 1 else s for i, s in enumerate(base.steps)))
    export = diffusers_export(told_base, discrete.noise_schedule)
    assert export.scheduler is None and "learned times" in export.reason
    assert "learned times" not in (diffusers_export(base, discrete.noise_schedule).reason or "")


def test_learned_model_times_stay_between_the_neighbouring_times_and_restart_where_they_were():
    model = _mixture_model(ContinuousVPLinear())
    schedule = baseline("unipc_bh2", 5, model)
    params = ScheduleParameters(schedule, model.noise_schedule, RefineTargets(free_weights=False))
    with torch.no_grad():
        params.model_shift.copy_(torch.tensor([40.0, -40.0, 0.3, -0.2]))
    learned = params.to_schedule()
    t = learned.timesteps
    told = [s.model_time for s in learned.steps]
    assert told[0] is None and all(t[i + 1] < told[i] < t[i - 1] for i in range(1, 5))
    assert told[1] == pytest.approx(t[1] + 0.5 * min(t[0] - t[1], t[1] - t[2]))  # at the window's edge
    with torch.no_grad():
        params.model_shift.copy_(torch.tensor([1.5, -1.0, 0.3, -0.2]))
    learned = params.to_schedule()
    told = [s.model_time for s in learned.steps]
    again = ScheduleParameters(learned, model.noise_schedule, RefineTargets(free_weights=False))
    for i, m in again.model_times().items():
        assert float(m) == pytest.approx(told[i], rel=1e-9)
    noise = _noise(model)
    with torch.no_grad():
        assert torch.allclose(integrate(model, again.plan(), noise), sample(model, learned, noise), atol=1e-10)
    frozen = ScheduleParameters(learned, model.noise_schedule, RefineTargets(free_weights=False, model_times=False))
    assert not frozen.model_shift.requires_grad
    assert [s.model_time for s in frozen.to_schedule().steps] == told


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


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
def test_the_loss_is_the_chosen_distance_to_the_teacher_of_the_validation_draws(distance):
    """Checked against the sampler and the teacher directly: the euclidean loss is each validation draw's
    distance to its teacher, averaged; the squared loss is the mean squared error; the schedule says which."""
    from schedsearch.search.refine import settings_from_options, training_set

    model = load_model("builtin:gmm-ring")
    schedule = baseline("dpmpp_2m", 4, model)
    settings = RefineSettings(iterations=1, samples=40, batch_size=10, distance=distance)
    result = refine(model, schedule, settings)
    noises, teacher = training_set(model, settings, schedule.guidance_scale, None)
    diff = sample(model, schedule, noises.noise[:10]) - teacher[:10]
    expected = diff.norm(dim=1).mean() if distance == "euclidean" else diff.pow(2).mean()
    assert result.initial_loss == pytest.approx(float(expected), rel=1e-6)
    assert result.schedule.provenance["refined"]["distance"] == distance
    with pytest.raises(ValueError, match="distance: 'l1' must be one of euclidean, squared"):
        RefineSettings(distance="l1")
    assert settings_from_options({"distance": distance}, None, 100, None).distance == distance  # a search's refine:


def test_on_a_plateau_refinement_returns_to_its_best_iterate_with_smaller_steps(monkeypatch):
    """Steps too large for the start (here: absurd rates, which diverge or wander) end in a plateau;
    refinement goes back to the best iterate and continues with smaller steps, which improve it; the schedule
    says at which scale its iterate was found."""
    import schedsearch.search.refine as refine_module

    model = load_model("builtin:gmm-ring")
    schedule = baseline("dpmpp_2m", 4, model)
    settings = RefineSettings(iterations=60, samples=200, batch_size=100, eval_every=5, patience=2,
                              lr_times=300.0, lr_coefficients=30.0, targets=RefineTargets(model_times=False))
    monkeypatch.setattr(refine_module, "CUT", 1e-4)
    seen = []
    result = refine(model, schedule, settings, lambda i, train, val: seen.append(i))
    assert result.schedule.provenance["refined"]["lr_scale"] == pytest.approx(1e-4)
    assert result.best_iteration > 0 and result.loss < 0.8 * result.initial_loss
    assert seen == list(range(1, result.iterations + 1))


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


def test_image_models_also_learn_in_the_feature_space_of_their_classifier():
    """On the digits model the loss adds the distance in the bundled classifier's features, each term as a share
    of where it started (so the start is 1 + w); models without a feature network cannot ask for it."""
    from schedsearch.search.refine import feature_network, resolve_feature_weight

    model = load_model("builtin:digits")
    features = feature_network(model)
    assert features is not None and feature_network(model, extractor="inception-v3-compat") is None
    assert resolve_feature_weight(None, features) == 1.0 and resolve_feature_weight(None, None) == 0.0
    with pytest.raises(ValueError, match="feature_weight: 2, but this model has no image feature network"):
        resolve_feature_weight(2.0, None)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    features(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the samples
    settings = RefineSettings(iterations=4, samples=24, batch_size=12, eval_every=2, teacher_steps=12,
                              feature_weight=2.0)
    result = refine(model, baseline("dpmpp_2m", 3, model), settings, features=features)
    assert result.initial_loss == pytest.approx(3.0)
    assert result.schedule.provenance["refined"]["feature_weight"] == 2.0


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/r.json", "--feature-weight", "2"],
     "feature_weight: 2, but this model has no image feature network"),
    (["-o", "{tmp}/r.txt"], "-o/--output {tmp}/r.txt: unknown file type '.txt' (use json)"),
    (["-o", "{tmp}/r.json", "--model", "builtin:gmm-8d"],
     "time_domain: schedule is 'discrete_vp' but the model uses 'continuous_vp'"),
    (["-o", "{tmp}/r.json", "--no-times", "--no-relaxations", "--no-free-weights", "--no-model-times"],
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


# -- the refine stage of a search ------------------------------------------------------------------------------

def _refine_config(**changes):
    from tests.test_search import config

    refine = {"top_k": 1, "baselines": 1, "iterations": 40, "samples": 200, "batch_size": 100,
              **changes.pop("refine", {})}
    return config(budget=24, refine=refine, **changes)


def _run(cfg, url, engine, progress=None):
    from schedsearch.search.loop import SearchRun
    from schedsearch.storage import TrialStore

    store = TrialStore.open(url)
    try:
        return SearchRun(cfg, store, engine, progress).run()
    finally:
        store.close()


@pytest.fixture(scope="module")
def mixture_engine():
    from schedsearch.search.engines import LocalEngine

    return LocalEngine(_refine_config().evaluation_spec())


def test_a_search_refines_its_best_schedules_and_validates_them_like_any_other(tmp_path, mixture_engine):
    from schedsearch.search.fidelity import SEARCH_STAGES, top_schedules
    from schedsearch.search.queries import export_best
    from schedsearch.search.results import summarize
    from schedsearch.storage import Stage, TrialState, TrialStore

    from schedsearch.search.loop import SearchProgress

    cfg = _refine_config()
    url = f"sqlite:///{tmp_path / 'r.db'}"
    stages, advances, losses = [], [], []

    def on_refine(advance, loss):
        advances.append(advance)
        losses.append(loss)

    progress = SearchProgress(on_stage=lambda name, total: stages.append((name, total)), on_refine=on_refine)
    outcome = _run(cfg, url, mixture_engine, progress)
    assert ("refine", 2 * 40) in stages and sum(advances) == 2 * 40  # the bar counts both jobs' iterations
    assert len(advances) > 2 and any(v is not None for v in losses)  # in-process: every iteration, with the loss
    trials = outcome.trials
    by_number = {t.number: t for t in trials}
    spent = [t for t in trials if t.stage in SEARCH_STAGES and not t.meta.get("validation")]
    assert len(spent) == cfg.budget  # refinement is spent after the budget, not from it
    refined = [t for t in trials if t.stage is Stage.REFINE]
    assert len(refined) == 2 and all(t.state is TrialState.COMPLETE and t.fidelity == 800 for t in refined)
    searched = [t for t in trials if t.stage is not Stage.REFINE]
    best_searched = top_schedules(searched, 4, 1, (Stage.SEARCH,))[0]
    best_baseline = top_schedules(searched, 4, 1, (Stage.BASELINE,))[0]
    assert {t.meta["refined_from"] for t in refined} == {best_searched.number, best_baseline.number}
    for t in refined:  # the refined schedule keeps its source's structure and NFE, with learned numbers
        source = by_number[t.meta["refined_from"]]
        assert t.nfe == source.nfe and t.schedule["format"] == "schedsearch.schedule/2"
        assert t.schedule["timesteps"] != source.schedule["timesteps"]
        assert t.schedule["provenance"]["refined"]["train_seed"] == 2
        assert t.meta["refine"]["loss"] < t.meta["refine"]["initial_loss"]
    holdout = {t.meta["of"]: t for t in trials if t.stage is Stage.HOLDOUT}
    assert {t.number for t in refined} <= set(holdout)  # validated on the held-out noise like the others
    for t in refined:  # on noise it never saw, each refined schedule beats the schedule it came from
        assert holdout[t.number].objective < holdout[t.meta["refined_from"]].objective
    s = summarize(trials, outcome.objective, outcome.floor)[4]
    assert s.winner.label.startswith("refined #") and "(from " in s.winner.label
    assert s.best_baseline is not None and not s.best_baseline.label.startswith("refined")
    assert any(step.get("model_time") is not None for step in s.winner.schedule["steps"])
    from schedsearch.search.report import plot_schedules

    drawn = plot_schedules(s, load_model(cfg.model).noise_schedule, tmp_path / "schedule.png", "refined")
    assert drawn.stat().st_size > 0  # the model times drawn beside the points
    store = TrialStore.open(url)
    exported = export_best(store, store.get_search("mix"), 4)
    store.close()
    assert exported["format"] == "schedsearch.schedule/2"
    assert exported["provenance"]["trial"] == s.winner.holdout_trial


def test_a_search_interrupted_during_refinement_resumes_to_the_same_trials(tmp_path, mixture_engine):
    from schedsearch.search.loop import SearchProgress
    from tests.test_search import fingerprint

    cfg = _refine_config()
    whole = _run(cfg, f"sqlite:///{tmp_path / 'whole.db'}", mixture_engine)
    url = f"sqlite:///{tmp_path / 'cut.db'}"
    stops = iter(["refine", "refined", "validation"])
    stop = {"at": next(stops)}

    def on_stage(name, total):
        if name == stop["at"]:
            raise KeyboardInterrupt

    interrupted = 0
    while True:
        try:
            outcome = _run(cfg, url, mixture_engine, SearchProgress(on_stage=on_stage))
            break
        except KeyboardInterrupt:
            interrupted += 1
            stop["at"] = next(stops, None)
    assert interrupted == 3
    assert fingerprint(outcome.trials) == fingerprint(whole.trials)


def test_resuming_a_finished_search_with_refinement_refines_its_winners(tmp_path, mixture_engine):
    from schedsearch.storage import Stage, TrialStore
    from tests.test_search import config

    url = f"sqlite:///{tmp_path / 'later.db'}"
    plain = _run(config(budget=24), url, mixture_engine)
    assert not [t for t in plain.trials if t.stage is Stage.REFINE]
    later = _run(_refine_config(), url, mixture_engine)  # `schedsearch resume mix --refine 1`
    assert [t.number for t in later.trials][: len(plain.trials)] == [t.number for t in plain.trials]
    assert len([t for t in later.trials if t.stage is Stage.REFINE]) == 2
    store = TrialStore.open(url)
    assert store.get_search("mix").config["refine"]["top_k"] == 1  # the stored config says what was done
    store.close()
    again = _run(_refine_config(), url, mixture_engine)
    assert len(again.trials) == len(later.trials)  # each schedule is refined once


def test_refinement_settings_are_validated_at_the_edge():
    from schedsearch.search.config import ConfigError

    with pytest.raises(ConfigError, match=r"refine.seed: the training noise must use another seed"):
        _refine_config(refine={"top_k": 1, "seed": 1})
    with pytest.raises(ConfigError, match=r"refine.learn: nothing to learn"):
        _refine_config(refine={"top_k": 1, "learn": []})
    with pytest.raises(ConfigError, match=r"refine.learn.0: Input should be 'times'"):
        _refine_config(refine={"top_k": 1, "learn": ["tims"]})
    with pytest.raises(ConfigError, match=r"refine.iterations: Input should be greater than or equal to 1"):
        _refine_config(refine={"top_k": 1, "iterations": 0})
    with pytest.raises(ConfigError, match=r"refine.distance: Input should be 'euclidean' or 'squared'"):
        _refine_config(refine={"top_k": 1, "distance": "l1"})
