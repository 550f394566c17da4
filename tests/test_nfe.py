"""NFE accounting: a counting wrapper proves model calls == schedule.nfe."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from schedsearch.solvers import (
    AnalyticFirstStep,
    CountingNetwork,
    Estimator,
    Schedule,
    Step,
    baseline,
    load_model,
    sample,
)
from tests.strategies import discrete_schedules

MODEL = load_model("builtin:gmm-ring")
NOISE = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _calls(schedule: Schedule, guidance: float | None = None) -> int:
    counter = CountingNetwork(MODEL.network)
    model = replace(MODEL, network=counter, uncond=torch.tensor(0))
    out = sample(model, schedule, NOISE, cond=torch.zeros(8) if guidance else None, guidance_scale=guidance)
    assert out.shape == NOISE.shape
    return counter.calls


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(discrete_schedules())
def test_calls_equal_nfe_for_random_schedules(schedule):
    assert _calls(schedule) == schedule.nfe


@pytest.mark.parametrize(
    "prediction,order,corrector,estimator,analytic",
    [
        combo
        for combo in itertools.product(
            ["data", "noise"], [1, 2, 3, 4], ["none", "pseudo", "implicit"], ["taylor", "bh1", "bh2", "ipndm"],
            [None, "zero", "mean"],
        )
        if not (combo[3] == "ipndm" and (combo[0] == "data" or combo[2] != "none"))
    ],
)
def test_calls_equal_nfe_for_every_uniform_decision(prediction, order, corrector, estimator, analytic):
    n = 6
    steps = tuple(
        Step(prediction, min(order, i + 1), corrector=corrector if i < n - 1 else "none", estimator=estimator)
        for i in range(n)
    )
    schedule = Schedule("discrete_vp", (999, 800, 600, 400, 200, 100, 20), steps, analytic_first_step=analytic)
    expected = n - (analytic is not None) + (n - 1) * (corrector == "implicit")
    assert schedule.nfe == expected
    assert _calls(schedule) == expected


def test_guidance_counts_one_evaluation_per_call():
    schedule = baseline("unipc_bh2", 5, MODEL)
    assert _calls(schedule, guidance=2.0) == 5


def test_analytic_first_step_saves_one_evaluation():
    base = baseline("dpmpp_2m", 6, MODEL)
    for kind in AnalyticFirstStep:
        analytic = replace(base, analytic_first_step=kind)
        assert analytic.nfe == 5
        assert _calls(analytic) == 5


def test_ipndm_is_linear_multistep_in_sigma_over_alpha():
    """iPNDM's update, checked by hand: u = x/α advances by (ρ_t − ρ_s)·Σ b_j ε̂_j."""
    ns = MODEL.noise_schedule
    s = baseline("ipndm", 4, MODEL)
    assert [st.order for st in s.steps] == [1, 2, 3, 4]
    assert all(st.estimator is Estimator.IPNDM for st in s.steps)
    times = s.timesteps
    alpha, sigma = ns.alpha_sigma(list(times))
    rho = sigma / alpha
    b = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    x, eps = NOISE.clone(), []
    for i in range(4):
        eps.insert(0, MODEL.predict(x, times[i], float(alpha[i]), float(sigma[i])).noise)
        u = x / alpha[i] + (rho[i + 1] - rho[i]) * sum(w * e for w, e in zip(b[i + 1], eps))
        x = u * alpha[i + 1]
    assert torch.allclose(sample(MODEL, s, NOISE), x, rtol=1e-10, atol=1e-12)
