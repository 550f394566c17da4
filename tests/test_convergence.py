"""Convergence orders on Gaussian mixtures against a high-accuracy reference ODE solution.

Multistep methods start with lower orders; to see the asymptotic order the first
interval is h² long (its first-order step then errs by O(h⁴)), the rest uniform in λ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schedsearch.solvers import (
    EDM,
    ContinuousVPLinear,
    Derivative,
    DiscreteVP,
    GaussianMixture,
    Schedule,
    Step,
    sample,
)
from tests.helpers import gaussian_flow, reference_solution


def _mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 3, generator=g, dtype=torch.float64)
    stds = 0.5 + 0.3 * torch.rand(3, 3, generator=g, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.5, 0.2]), means, stds)


FAMILIES = {
    "continuous_vp": ContinuousVPLinear(),
    "edm": EDM(sigma_min=0.01, sigma_max=80.0),
    "discrete_vp": DiscreteVP.from_config({"beta_schedule": "linear"}),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def problem(request):
    ns = FAMILIES[request.param]
    model = _mixture().as_model(ns)
    t0, t1 = float(ns.t_of_rho(10.0)), float(ns.t_of_rho(0.05))
    sigma0 = float(ns.alpha_sigma(t0)[1])
    x = sigma0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, t0, t1, x, reference_solution(model, x, t0, t1, steps=3000)


def _grid(ns, t0: float, t1: float, n: int) -> tuple[float, ...]:
    l0, l1 = float(ns.lambda_(t0)), float(ns.lambda_(t1))
    h = (l1 - l0) / n
    lam = np.concatenate([[l0, l0 + h * h], np.linspace(l0 + h * h + h, l1, n - 1)])
    times = ns.t_of_lambda(lam)
    times[0], times[-1] = t0, t1
    return tuple(float(t) for t in times)


def _observed_order(problem, prediction: str, order: int, corrector: str = "none", derivatives=None) -> float:
    """Slope of log error vs log steps; ``derivatives`` replace the default ones wherever their points exist."""
    model, t0, t1, x, ref = problem
    reach = max((-p for d in derivatives or () for p in d.active_points), default=0)
    errors = []
    for n in (10, 20, 40, 80):
        steps = [
            Step(prediction, order, derivatives) if derivatives and i >= reach
            else Step(prediction, min(order, i + 1), corrector=corrector if i < n - 1 else "none")
            for i in range(n)
        ]
        schedule = Schedule(model.noise_schedule.time_domain, _grid(model.noise_schedule, t0, t1, n), tuple(steps))
        errors.append(float((sample(model, schedule, x) - ref).norm(dim=1).mean()))
    slopes = -np.diff(np.log(errors)) / np.log(2)
    return float(slopes[-2:].mean())


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_taylor_order(problem, prediction, order):
    observed = _observed_order(problem, prediction, order)
    assert order - 0.25 <= observed <= order + 0.75, observed


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order,corrector", [(1, "pseudo"), (2, "pseudo"), (1, "implicit"), (2, "implicit")])
def test_corrector_raises_order(problem, prediction, order, corrector):
    observed = _observed_order(problem, prediction, order, corrector)
    assert order + 1 - 0.25 <= observed <= order + 1.75, observed


CHOSEN_POINTS = {  # derivatives from earlier points other than the most recent ones
    "D1@-2": (Derivative((-2,)),),
    "D1,D2@-1,-3": (Derivative((-1, -3)), Derivative((-1, -3))),
    "D1@-3,-2;D2@-1,-3": (Derivative((-3, -2)), Derivative((-1, -3))),
    "D1@-2;D2@-1,-2": (Derivative((-2,)), Derivative((-1, -2))),
}


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("choice", list(CHOSEN_POINTS))
def test_chosen_points_keep_the_order(problem, prediction, choice):
    """A fit through m points gives D_k with an O(h^(m+1)) error: the order is 1 + the fewest points of any D_k.

    So skipping points keeps the order, and a third-order step whose D₁ comes from one point is second order.
    """
    derivatives = CHOSEN_POINTS[choice]
    expected = 1 + min(len(d.active_points) for d in derivatives)
    observed = _observed_order(problem, prediction, len(derivatives) + 1, derivatives=derivatives)
    assert expected - 0.25 <= observed <= expected + 0.75, observed


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_relaxation_is_applied(problem, prediction):
    """Halving the only derivative of a second-order step leaves an O(h²) local error: first order."""
    observed = _observed_order(problem, prediction, 2, derivatives=(Derivative((-1,), 0.5),))
    assert 0.75 <= observed <= 1.5, observed


def test_reference_solver_is_exact_on_a_gaussian():
    """The reference ODE solver itself, against the closed-form flow of one Gaussian."""
    ns = ContinuousVPLinear()
    mix = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0]]), torch.tensor([[0.7, 0.3]]))
    model = mix.as_model(ns)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t0, t1 = 1.0, 1e-3
    exact = gaussian_flow(mix, ns, x, t0, t1)
    assert float((reference_solution(model, x, t0, t1, steps=2000) - exact).abs().max()) < 1e-8
