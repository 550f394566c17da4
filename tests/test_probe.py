"""The Gaussian probe: the real sampler as its oracle, the exact solution it measures against, convergence at
the solver's order, encoding."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from schedsearch.predictors.encoding import STEP_FEATURES, encode, step_width
from schedsearch.predictors.probe import PROBE_FEATURES, PROBE_SCALES, probe_errors, probe_errors_many, probe_features
from schedsearch.search.space import SearchSpace, SpaceSpec
from schedsearch.solvers import baseline, compile_plan, load_model
from schedsearch.solvers.models import Predictions, analytic_predictions
from schedsearch.solvers.sampler import integrate

from tests.helpers import varied_schedules

MODEL = load_model("builtin:gmm-ring")
NS = MODEL.noise_schedule


class _GaussianData:
    """The exact denoiser of N(0, s²) data, one sample per probe scale; remembers the state of every model call."""

    sample_shape = (1,)
    device = torch.device("cpu")
    state_dtype = torch.float64

    def __init__(self) -> None:
        self.var = torch.tensor(PROBE_SCALES, dtype=torch.float64).unsqueeze(1) ** 2
        self.states: dict[float, torch.Tensor] = {}  # by α(t_i): an implicit corrector's second call replaces the first

    def predict(self, x: torch.Tensor, t: float, alpha: float, sigma: float, cond: Any = None,
                guidance_scale: float | None = None) -> Predictions:
        self.states[float(alpha)] = x.clone()
        x0 = alpha * self.var * x / (alpha * alpha * self.var + sigma * sigma)
        return Predictions(x0, (x - alpha * x0) / sigma)

    def analytic(self, x: torch.Tensor, alpha: float, sigma: float, kind: str) -> Predictions:
        return analytic_predictions(x, alpha, sigma, kind, 0.0)


def _sampler_probe(schedule, ns) -> np.ndarray:
    """The probe by its definition: the real sampler on Gaussian data, each step's state against the exact flow."""
    data, plan = _GaussianData(), compile_plan(schedule, ns)
    final = integrate(data, plan, torch.ones(len(PROBE_SCALES), 1, dtype=torch.float64))
    alpha, sigma = ns.alpha_sigma(list(schedule.timesteps))
    std = np.sqrt(np.outer(alpha**2, np.asarray(PROBE_SCALES) ** 2) + sigma[:, None] ** 2)
    out = np.zeros((schedule.num_steps, len(PROBE_SCALES)))
    for i in range(schedule.num_steps):
        state = final if i == schedule.num_steps - 1 else data.states[float(plan.steps[i + 1].node.alpha)]
        out[i] = state.squeeze(1).numpy() / (std[i + 1] / std[0]) - 1.0
    return out


@pytest.mark.parametrize("model_name", ["builtin:gmm-ring", "builtin:digits"])
def test_the_batched_probe_equals_the_real_sampler(model_name):
    model = load_model(model_name)
    ns = model.noise_schedule
    schedules = varied_schedules(model, 200, seed=5)
    for schedule, got in zip(schedules, probe_errors_many(schedules, ns)):
        want = _sampler_probe(schedule, ns)
        assert np.isfinite(want).all()
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=str(schedule))


def _uniform_lambda_to_t_min(solver: str, steps: int):
    """``solver`` on a uniform-λ grid ending at t_min (the data time's last step is a denoising jump, not the ODE)."""
    lam = np.linspace(*NS.lambda_([NS.t_max, NS.t_min]), steps + 1)
    t = NS.t_of_lambda(lam)
    t[0], t[-1] = NS.t_max, NS.t_min
    return dataclasses.replace(baseline(solver, steps, MODEL, grid="uniform_lambda"), timesteps=tuple(map(float, t)))


def _final_error(solver: str, steps: int) -> float:
    return float(np.abs(probe_errors(_uniform_lambda_to_t_min(solver, steps), NS)[-1]).max())


def test_probe_errors_vanish_at_the_solvers_order():
    # the exact solution is right: a fine second-order solve meets it at every scale
    assert _final_error("dpmpp_2m", 160) < 3e-4
    ddim = _final_error("ddim", 40) / _final_error("ddim", 80)
    second = _final_error("dpmpp_2m", 80) / _final_error("dpmpp_2m", 160)
    assert 1.8 < ddim < 2.2, ddim  # first order: half the step, half the error
    assert 3.5 < second < 4.6, second  # second order: a quarter


def test_probe_rows_grow_along_the_solve_and_read_every_decision():
    rows = probe_errors(baseline("ddim", 5, MODEL, grid="uniform_lambda"), NS)
    assert rows.shape == (5, PROBE_FEATURES)
    assert np.all(np.abs(rows[0]) < np.abs(rows[-1]))  # errors accumulate
    space = SearchSpace(SpaceSpec(nfe=(3, 5, 8)), NS, has_data_mean=True)
    rng = np.random.default_rng(0)
    schedules = [space.decode(space.random(rng)) for _ in range(60)]  # correctors, analytic first steps, …
    assert any(s.analytic_first_step is not None for s in schedules)
    for s in schedules:
        f = probe_features(s, NS)
        assert f.shape == (s.num_steps, PROBE_FEATURES) and np.isfinite(f).all()
    # on the same times, solvers that differ only in their decisions (order, estimator, corrector) differ in the probe
    same_grid = [probe_errors(baseline(name, 5, MODEL, grid="uniform_lambda"), NS)
                 for name in ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc_bh2")]
    for a in range(len(same_grid)):
        for b in range(a):
            assert not np.allclose(same_grid[a], same_grid[b], rtol=1e-3, atol=0)


def test_encoding_with_the_probe_appends_its_rows():
    space = SearchSpace(SpaceSpec(nfe=(3, 5)), NS, has_data_mean=True)
    rng = np.random.default_rng(1)
    schedules = [space.decode(space.random(rng)) for _ in range(10)]
    plain, probed = encode(schedules, NS), encode(schedules, NS, probe=True)
    assert probed.steps.shape[-1] == step_width(True) == STEP_FEATURES + PROBE_FEATURES
    assert torch.equal(probed.steps[..., :STEP_FEATURES], plain.steps)
    for b, s in enumerate(schedules):
        assert torch.equal(probed.steps[b, : s.num_steps, STEP_FEATURES:], torch.from_numpy(probe_features(s, NS)))
    assert (probed.steps[~probed.mask] == 0).all()
