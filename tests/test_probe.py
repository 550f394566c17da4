"""The Gaussian probe: the exact solution it measures against, convergence at the solver's order, encoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from schedsearch.predictors.encoding import STEP_FEATURES, clear_probe_cache, encode, step_width
from schedsearch.predictors.probe import PROBE_FEATURES, probe_errors, probe_features
from schedsearch.search.space import SearchSpace, SpaceSpec
from schedsearch.solvers import baseline, load_model

MODEL = load_model("builtin:gmm-ring")
NS = MODEL.noise_schedule


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
    clear_probe_cache()
    plain, probed = encode(schedules, NS), encode(schedules, NS, probe=True)
    assert probed.steps.shape[-1] == step_width(True) == STEP_FEATURES + PROBE_FEATURES
    assert torch.equal(probed.steps[..., :STEP_FEATURES], plain.steps)
    for b, s in enumerate(schedules):
        assert torch.equal(probed.steps[b, : s.num_steps, STEP_FEATURES:], torch.from_numpy(probe_features(s, NS)))
    assert (probed.steps[~probed.mask] == 0).all()
