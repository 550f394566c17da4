"""Hypothesis strategies: random legal schedules over the whole decision space."""

from __future__ import annotations

from hypothesis import strategies as st

from schedsearch.solvers import AnalyticFirstStep, Corrector, Derivative, Estimator, Prediction, Schedule, Step


@st.composite
def steps_for(draw, i: int, last: bool, to_data: bool) -> Step:
    prediction = draw(st.sampled_from(list(Prediction)))
    estimators = [Estimator.TAYLOR, Estimator.BH1, Estimator.BH2]
    if prediction is Prediction.NOISE:
        estimators.append(Estimator.IPNDM)
    estimator = draw(st.sampled_from(estimators))
    max_order = min(4, i + 1)
    if to_data and estimator is not Estimator.IPNDM:
        max_order = 1
    order = draw(st.integers(1, max_order))
    if estimator is Estimator.IPNDM:
        return Step(prediction, order, estimator=estimator)
    derivatives = []
    for k in range(1, order):
        points = draw(st.lists(st.integers(-i, -1), min_size=k, max_size=min(i, 4), unique=True))
        relaxation = draw(st.sampled_from([1.0, 1.0, 0.5, 1.2]))
        derivatives.append(Derivative(tuple(points), relaxation))
    corrector = Corrector.NONE if last else draw(st.sampled_from(list(Corrector)))
    return Step(prediction, order, tuple(derivatives), corrector, estimator)


@st.composite
def discrete_schedules(draw, max_steps: int = 8) -> Schedule:
    """Legal schedules for a 1000-step discrete-VP model."""
    n = draw(st.integers(1, max_steps))
    to_data = draw(st.booleans())
    k = n if to_data else n + 1
    times = sorted(draw(st.lists(st.integers(0, 999), min_size=k, max_size=k, unique=True)), reverse=True)
    if to_data:
        times.append(-1)
    steps = tuple(draw(steps_for(i, i == n - 1, to_data and i == n - 1)) for i in range(n))
    analytic = draw(st.sampled_from([None, AnalyticFirstStep.ZERO, AnalyticFirstStep.MEAN]))
    if analytic is not None and n - 1 + sum(s.corrector is Corrector.IMPLICIT for s in steps) < 1:
        analytic = None
    return Schedule("discrete_vp", tuple(float(t) for t in times), steps, analytic_first_step=analytic)
