"""The evaluator: fixed noise, exact mixture metrics, failures as results, successive halving."""

from __future__ import annotations

import torch

from schedsearch.solvers import (
    ContinuousVPLinear,
    Derivative,
    GaussianMixture,
    Schedule,
    Step,
    baseline,
    from_callable,
)
from schedsearch.search.evaluator import SampleEvaluator, successive_halving
from schedsearch.search.metrics.quality import MixtureMetrics, ReferenceDistance, exact_mmd
from schedsearch.search.noise_set import NoiseSet

MIX = GaussianMixture.random(2, 4, torch.Generator().manual_seed(11), spread=1.5)
NS = ContinuousVPLinear()
MODEL = MIX.as_model(NS)


def _evaluator(n: int = 4000) -> SampleEvaluator:
    noises = NoiseSet.draw(MODEL.sample_shape, n, seed=5, dtype=torch.float64)
    ref = ReferenceDistance(MODEL, baseline("dpmpp_3m", 100, NS))
    return SampleEvaluator(MODEL, noises, [MixtureMetrics(MIX), ref], objective="mmd")


def test_exact_mmd_is_unbiased_zero_for_exact_samples():
    values = [exact_mmd(MIX, MIX.sample(2000, torch.Generator().manual_seed(s)), 1.0) for s in range(20)]
    mean, sd = float(torch.tensor(values).mean()), float(torch.tensor(values).std())
    assert abs(mean) < 3 * sd / 20**0.5 + 1e-6
    shifted = MIX.sample(2000, torch.Generator().manual_seed(0)) + 0.3
    assert exact_mmd(MIX, shifted, 1.0) > 10 * sd


def test_fine_sampler_is_within_noise_of_exact_samples():
    evaluator = _evaluator()
    fine = evaluator.evaluate(baseline("dpmpp_3m", 200, NS))
    exact = [exact_mmd(MIX, MIX.sample(4000, torch.Generator().manual_seed(100 + s)), 1.0) for s in range(10)]
    noise_level = float(torch.tensor(exact).abs().max())
    assert not fine.failed
    assert abs(fine.metrics["mmd"]) <= 2 * noise_level
    coarse = evaluator.evaluate(baseline("ddim", 4, NS))
    assert coarse.metrics["mmd"] > 5 * noise_level
    assert coarse.metrics["ref_rmse"] > 10 * fine.metrics["ref_rmse"]


def test_same_schedule_twice_gives_the_same_value():
    evaluator = _evaluator(1000)
    s = baseline("unipc_bh2", 6, NS)
    assert evaluator.evaluate(s).metrics == evaluator.evaluate(s).metrics


def test_divergent_schedule_is_a_failed_result():
    evaluator = _evaluator(200)
    wild = Step("data", 3, (Derivative((-1, -2), 1e12), Derivative((-1, -2), 1e12)))
    schedule = Schedule("continuous_vp", (1.0, 0.6, 0.3, 0.1, 0.0), (Step(), Step(order=2), wild, Step()))
    result = evaluator.evaluate(schedule)
    assert result.failed and result.objective is None
    assert "diverged" in result.error or "non-finite" in result.error


def test_nan_samples_are_a_failed_result():
    """A network that returns NaN for one class: a failed result counting the bad samples, not a crash or a metric."""

    def network(x, t, cond):
        out = MODEL.network(x, t, None)
        return torch.where((cond == 3)[:, None], torch.nan, out)

    model = from_callable(network, "x0", NS, MODEL.sample_shape, dtype=torch.float64)
    noises = NoiseSet.draw(model.sample_shape, 200, seed=5, num_classes=10, dtype=torch.float64)
    evaluator = SampleEvaluator(model, noises, [MixtureMetrics(MIX)], objective="mmd", batch_size=64)
    result = evaluator.evaluate(baseline("dpmpp_2m", 5, NS))
    assert result.failed and result.objective is None and result.metrics == {}
    assert result.error == "non-finite samples (NaN/inf) in 20 of 200"  # labels 0…9 repeated: twenty 3s
    assert evaluator.evaluate(baseline("dpmpp_2m", 5, NS), 25).error == "non-finite samples (NaN/inf) in 3 of 25"
    everywhere = from_callable(lambda x, t, cond: torch.full_like(x, torch.nan), "x0", NS, (2,), dtype=torch.float64)
    evaluator = SampleEvaluator(everywhere, noises, [MixtureMetrics(MIX)], objective="mmd")
    result = evaluator.evaluate(baseline("ddim", 3, NS))
    assert result.failed and result.error == "non-finite samples (NaN/inf) in 200 of 200"


def test_schedule_outside_the_model_range_is_a_failed_result():
    evaluator = _evaluator(100)
    bad = Schedule("continuous_vp", (1.0, 1e-5, 0.0), (Step(), Step()))
    result = evaluator.evaluate(bad)
    assert result.failed and "illegal schedule" in result.error


def test_successive_halving_keeps_the_best_and_records_all_levels():
    evaluator = _evaluator(2000)
    schedules = [baseline(name, 5, NS) for name in ("ddim", "dpmpp_2m", "unipc_bh2", "dpm_solver_3")]
    history = successive_halving(evaluator, schedules, levels=[250, 500, 2000])
    assert [len(level) for level in history] == [4, 2, 1]
    assert all(r.num_samples == n for level, n in zip(history, [250, 500, 2000]) for _, r in level)
    first = sorted((r.objective, i) for i, r in history[0])
    assert {i for i, _ in history[1]} == {i for _, i in first[:2]}
