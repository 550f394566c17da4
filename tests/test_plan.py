"""Compiled plans: updates for chosen derivative points and relaxations, derived by hand.

On the EDM schedule (α = 1, σ = t, λ = −log t) an exponential-integrator step s → t with
h = λ_t − λ_s is, in data-prediction form,

    x_t = (σ_t/σ_s)·x_s + (1 − e^{−h})·y_s + h·φ₂(−h)·D₁ + h·φ₃(−h)·D₂,

and in noise-prediction form x_t = x_s − σ_t·[(eʰ − 1)·y_s + h·φ₂(h)·D₁ + h·φ₃(h)·D₂], where
D_k is h^k times the k-th λ-derivative at λ_s of the polynomial through s and the chosen
earlier points, times the relaxation. Below, the φ's are their closed forms and the D's
the explicit divided differences of one or two points, so nothing here reuses the
package's own coefficient code. Baselines only ever use the most recent points; these
schedules do not.
"""

from __future__ import annotations

import math

import pytest
import torch
from schedsearch.solvers import (
    EDM,
    Derivative,
    Schedule,
    Step,
    compile_plan,
    from_callable,
    load_model,
    sample,
)
from schedsearch.solvers.errors import ScheduleError
from schedsearch.solvers.plan import dense_plans

from tests.helpers import varied_schedules

NS = EDM()
TIMES = (10.0, 5.0, 2.5, 1.4, 0.8, 0.45, 0.25)
LAM = [-math.log(t) for t in TIMES]
STEPS = (
    Step(),
    Step(),
    Step("data", 2, (Derivative((-2,)),)),  # D1 from the point before the previous one
    Step("data", 3, (Derivative((-1, -3)), Derivative((-1, -3), 0.5))),  # skips point 1; D2 relaxed
    Step("noise", 2, (Derivative((-3,), 0.7),), corrector="pseudo"),  # D1 from point 1, relaxed
    Step(),
)
SCHEDULE = Schedule("edm", TIMES, STEPS)


def _phi(k: int, z: float) -> float:
    """φ₁(z) = (eᶻ−1)/z, φ₂(z) = (eᶻ−1−z)/z², φ₃(z) = (eᶻ−1−z−z²/2)/z³ (|z| ≳ 0.3 here: no cancellation)."""
    taylor = sum(z**j / math.factorial(j) for j in range(k))
    return (math.exp(z) - taylor) / z**k


def _derivatives(s: int, points: tuple[int, ...], y: dict[int, float]) -> tuple[float, ...]:
    """(D₁,) from one point, (D₁, D₂) from the parabola through s and two points (r = offsets in units of h)."""
    h = LAM[s + 1] - LAM[s]
    r = [(LAM[p] - LAM[s]) / h for p in points]
    d = [y[p] - y[s] for p in points]
    if len(points) == 1:
        return (d[0] / r[0],)
    (r1, r2), (d1, d2) = r, d
    den = r1 * r2 * (r2 - r1)
    a = (d1 * r2**2 - d2 * r1**2) / den  # y(r) = y_s + a·r + b·r²: D₁ = a, D₂ = 2b
    b = (d2 * r1 - d1 * r2) / den
    return a, 2 * b


def _increment(s: int, prediction: str, terms: list[tuple[tuple[int, ...], float, int]], y: dict[int, float]) -> float:
    """The update minus its ratio·x_s part; ``terms``: (points, relaxation, which D) per derivative used."""
    t = s + 1
    h = LAM[t] - LAM[s]
    ders = [rel * _derivatives(s, pts, y)[k - 1] for pts, rel, k in terms]
    if prediction == "data":  # α = 1
        return -math.expm1(-h) * y[s] + sum(h * _phi(k + 1, -h) * dk for k, dk in enumerate(ders, start=1))
    return -TIMES[t] * (math.expm1(h) * y[s] + sum(h * _phi(k + 1, h) * dk for k, dk in enumerate(ders, start=1)))


# Per step: its prediction kind and the derivatives it uses (points as absolute indices).
PREDICTORS = {
    0: ("data", []),
    1: ("data", []),
    2: ("data", [((0,), 1.0, 1)]),
    3: ("data", [((2, 0), 1.0, 1), ((2, 0), 0.5, 2)]),
    4: ("noise", [((1,), 0.7, 1)]),
    5: ("data", []),
}
# UniC on step 4: every estimate also goes through the new point 5; one more derivative from the same points.
CORRECTOR_4 = ("noise", [((1, 5), 0.7, 1), ((1, 5), 1.0, 2)])


def _expected_weights(s: int, prediction: str, terms) -> dict[int, float]:
    """The update is linear in the model outputs: its weights are its values on unit vectors."""
    used = {s} | {p for pts, _, _ in terms for p in pts}
    return {j: _increment(s, prediction, terms, {i: float(i == j) for i in used}) for j in sorted(used)}


def _weights(update) -> dict[int, float]:
    out: dict[int, float] = {}
    for j, w in update.weights:
        out[j] = out.get(j, 0.0) + w
    return out


def _assert_weights(actual: dict[int, float], expected: dict[int, float]) -> None:
    assert set(actual) == set(expected), (actual, expected)  # the chosen points, not the most recent ones
    for j in expected:
        assert actual[j] == pytest.approx(expected[j], rel=1e-11, abs=1e-13), (j, actual, expected)


@pytest.mark.parametrize("step", list(PREDICTORS))
def test_plan_coefficients_for_chosen_points(step):
    plan = compile_plan(SCHEDULE, NS)
    prediction, terms = PREDICTORS[step]
    update = plan.steps[step].predictor
    assert update.prediction.value == prediction
    ratio = TIMES[step + 1] / TIMES[step] if prediction == "data" else 1.0
    assert update.ratio == pytest.approx(ratio, rel=1e-13)
    _assert_weights(_weights(update), _expected_weights(step, prediction, terms))


def test_corrector_coefficients_for_chosen_points():
    plan = compile_plan(SCHEDULE, NS)
    assert [i for i, sp in enumerate(plan.steps) if sp.corrector is not None] == [4]
    _assert_weights(_weights(plan.steps[4].corrector), _expected_weights(4, *CORRECTOR_4))


def test_updates_are_exact_taylor_terms_on_a_polynomial():
    """On outputs y = P(λ) that the fit reproduces, D_k = h^k·P⁽ᵏ⁾(λ_s) exactly: Σ w·y = Σ_k hφ_{k+1}(−h)·rel_k·D_k."""
    plan = compile_plan(SCHEDULE, NS)
    cases = {  # step: (P, P', P'') and the relaxation of each derivative
        2: ((lambda v: 0.3 - 1.7 * v), (lambda v: -1.7), None, (1.0,)),  # one point: a line
        3: ((lambda v: 0.3 - 1.7 * v + 0.45 * v**2), (lambda v: -1.7 + 0.9 * v), (lambda v: 0.9), (1.0, 0.5)),
    }
    for s, (p, dp, d2p, relax) in cases.items():
        h, lam_s = LAM[s + 1] - LAM[s], LAM[s]
        got = sum(w * p(LAM[j]) for j, w in plan.steps[s].predictor.weights)
        exact = [dp(lam_s) * h, None if d2p is None else d2p(lam_s) * h**2]
        expected = -math.expm1(-h) * p(lam_s) + sum(
            h * _phi(k + 1, -h) * rel * exact[k - 1] for k, rel in enumerate(relax, start=1))
        assert got == pytest.approx(expected, rel=1e-11), s


def test_sampler_uses_the_chosen_points():
    """End to end: a network whose x̂₀ is a cubic in λ (per coordinate), run through ``sample``.

    The cubic is not reproduced by any of the fits, so the result depends on which points
    each step uses; the expected trajectory is built from the hand-derived increments.
    """
    coef = torch.tensor([[0.2, -0.5, 0.3, 0.04], [-1.0, 0.25, -0.15, 0.02]], dtype=torch.float64)

    def x0_of(lam: float) -> torch.Tensor:
        return sum(coef[:, k] * lam**k for k in range(4))

    def network(x, t, cond):
        lam = -torch.log(t.double())
        return torch.stack([x0_of(float(v)) for v in lam]).to(x)

    model = from_callable(network, "x0", NS, (2,), dtype=torch.float64)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(21), dtype=torch.float64) * TIMES[0]

    def predictions(x: torch.Tensor, i: int) -> dict[str, torch.Tensor]:
        data = x0_of(LAM[i]).expand_as(x)
        return {"data": data, "noise": (x - data) / TIMES[i]}

    def step(s: int, x: torch.Tensor, points: dict[int, dict[str, torch.Tensor]], spec) -> torch.Tensor:
        prediction, terms = spec
        ratio = TIMES[s + 1] / TIMES[s] if prediction == "data" else 1.0
        out = ratio * x.clone()
        for row in range(x.shape[0]):
            for dim in range(x.shape[1]):
                y = {j: float(v[prediction][row, dim]) for j, v in points.items()}
                out[row, dim] += _increment(s, prediction, terms, y)
        return out

    x, x_prev, points = noise, noise, {}
    for i in range(len(STEPS)):
        points[i] = predictions(x, i)
        if i == 5:  # step 4's pseudo corrector: the point-5 prediction at the uncorrected x, then correct x
            x = step(4, x_prev, points, CORRECTOR_4)
        x_prev = x
        x = step(i, x, points, PREDICTORS[i])
    torch.testing.assert_close(sample(model, SCHEDULE, noise), x, rtol=1e-10, atol=1e-10)


def _plan_arrays(plan, size: int) -> list[tuple[float, str, list[float]] | None]:
    """A plan's predictors and correctors as (ratio, prediction, dense weights over the points)."""
    out = []
    for sp in plan.steps:
        for update in (sp.predictor, sp.corrector):
            if update is None:
                out.append(None)
                continue
            dense = [0.0] * size
            for j, w in update.weights:
                dense[j] += w
            out.append((update.ratio, update.prediction.value, dense))
    return out


def _dense_arrays(plans, b: int) -> list[tuple[float, str, list[float]] | None]:
    out = []
    for i in range(int(plans.lengths[b])):
        for ratio, data, noise, on in ((plans.ratio, plans.data, plans.noise, True),
                                       (plans.corrector_ratio, plans.corrector_data, plans.corrector_noise,
                                        bool(plans.corrected[b, i]))):
            if not on:
                out.append(None)
                continue
            assert not (data[b, i].any() and noise[b, i].any())
            kind = "noise" if noise[b, i].any() else "data"
            out.append((float(ratio[b, i]), kind, list((noise if kind == "noise" else data)[b, i])))
    return out


@pytest.mark.parametrize("model_name", ["builtin:gmm-ring", "builtin:digits"])
def test_dense_plans_equal_the_compiled_plans(model_name):
    """Many schedules compiled together (each kind of term computed for all their steps at once) equal one plan each."""
    model = load_model(model_name)
    ns = model.noise_schedule
    schedules = varied_schedules(model, 300, seed=3)
    plans = dense_plans(schedules, ns)
    for b, schedule in enumerate(schedules):
        expected = _plan_arrays(compile_plan(schedule, ns), plans.data.shape[2])
        got = _dense_arrays(plans, b)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert (g is None) == (e is None), b
            if e is not None:
                assert g[0] == pytest.approx(e[0], rel=1e-12, abs=1e-14) and g[1] == e[1], b
                assert g[2] == pytest.approx(e[2], rel=1e-11, abs=1e-12), (b, schedule)
        assert bool(plans.analytic[b]) == (schedule.analytic_first_step is not None)
        implicit = [st.corrector.value == "implicit" for st in schedule.steps]
        assert list(plans.implicit[b, : schedule.num_steps]) == implicit


@pytest.mark.parametrize(("bad", "where"), [
    (Schedule("edm", (100.0, 5.0, 1.0), (Step(), Step())), "timesteps[0]"),
    (Schedule("edm", (10.0, 5.0, 1.0), (Step(), Step(model_time=500.0))), "steps[1].model_time"),
    (Schedule("continuous_vp", (0.9, 0.5, 0.1), (Step(), Step())), "time_domain"),
])
def test_dense_plans_refuse_what_compile_plan_refuses(bad, where):
    with pytest.raises(ScheduleError) as single:
        compile_plan(bad, NS)
    with pytest.raises(ScheduleError) as batch:
        dense_plans([SCHEDULE, bad, SCHEDULE], NS)
    assert str(batch.value) == str(single.value) and where in str(single.value)


def test_a_step_table_shares_structures_and_keeps_each_steps_relaxations():
    """Steps that differ only in relaxations (or model time) share a structure; the table keeps their relaxations,
    1.0 past each step's derivatives; a pickled step keeps its structure."""
    import pickle

    from schedsearch.solvers.step_table import step_table

    a = Step("data", 3, (Derivative((-1, -2), 0.7), Derivative((-1, -2), 1.2)), corrector="pseudo")
    b = Step("data", 3, (Derivative((-1, -2), 0.9), Derivative((-1, -2), 1.0)), corrector="pseudo", model_time=4.0)
    c = Step("data", 3, (Derivative((-1, -3), 0.7), Derivative((-1, -2), 1.2)), corrector="pseudo")
    table = step_table([a, Step(), b, c, Step("noise", 2, (Derivative((-1,), 1.4),))])
    assert table.structure.tolist() == [0, 1, 0, 2, 3]
    assert table.structures[0] == ("data", 3, "taylor", "pseudo", ((-1, -2), (-1, -2)))
    assert table.relaxations.tolist() == [[0.7, 1.2, 1.0], [1.0, 1.0, 1.0], [0.9, 1.0, 1.0], [0.7, 1.2, 1.0],
                                          [1.4, 1.0, 1.0]]
    assert pickle.loads(pickle.dumps(a)).structure == a.structure
    assert len(step_table([])) == 0
