"""Schedule values, JSON v1 round trips and validation messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings

from schedsearch.solvers import (
    EDM,
    Corrector,
    Derivative,
    DiscreteVP,
    Schedule,
    ScheduleError,
    Step,
    baseline,
    compile_plan,
)
from tests.strategies import discrete_schedules

NS = DiscreteVP.from_config({"beta_schedule": "linear"})


@settings(max_examples=200, deadline=None)
@given(discrete_schedules())
def test_json_round_trip(schedule):
    text = schedule.to_json()
    again = Schedule.from_json(text)
    assert again == schedule
    assert again.to_json() == text
    assert again.canonical_hash() == schedule.canonical_hash()
    assert json.loads(text)["nfe"] == schedule.nfe


def test_public_api_round_trip_for_every_baseline():
    for name in ("ddim", "dpm_solver_3", "dpmpp_2m", "dpmpp_3m", "unipc_bh1", "unip_bh2", "ipndm"):
        for grid in ("uniform_t", "uniform_lambda", "quadratic", "karras", "linspace", "trailing"):
            s = baseline(name, 7, NS, grid=grid)
            assert Schedule.from_json(s.to_json()) == s
            assert s.nfe == 7
            compile_plan(s, NS)


def test_canonical_hash_ignores_provenance_and_sees_decisions():
    s = baseline("dpmpp_2m", 5, NS)
    other = Schedule(s.time_domain, s.timesteps, s.steps, provenance={"trial": 3})
    assert other.canonical_hash() == s.canonical_hash()
    changed = Schedule(s.time_domain, s.timesteps, (*s.steps[:-2], Step("noise", 2), s.steps[-1]))
    assert changed.canonical_hash() != s.canonical_hash()


def test_readme_schedule_example_is_valid():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```json\n(.*?)```", readme, re.S).group(1)
    schedule = Schedule.from_json(block)
    assert schedule.nfe == json.loads(block)["nfe"]
    compile_plan(schedule, NS)


def _doc(**overrides):
    base = {
        "format": "schedsearch.schedule/1",
        "time_domain": "discrete_vp",
        "timesteps": [999, 600, 300, -1],
        "steps": [{"prediction": "data", "order": 1}, {"prediction": "data", "order": 2}, {"order": 1}],
    }
    base.update(overrides)
    return json.dumps(base)


BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (_doc(format="other/2"), "format"),
    (_doc(time_domain="lattice"), "time_domain: unknown 'lattice'"),
    (_doc(timesteps=[999, 600, 600, -1]), "timesteps[2]: 600 duplicates timesteps[1]"),
    (_doc(timesteps=[999, 300, 600, -1]), "timesteps[2]: 600 is larger than timesteps[1]"),
    (_doc(timesteps=[999, 600, -1]), "timesteps: expected 4 times for 3 steps"),
    (_doc(timesteps=[999, "x", 300, -1]), "timesteps[1]"),
    (_doc(timesteps=[999, -1, -2, -3]), "data time"),
    (_doc(steps=[{"order": 1}, {"order": 3}, {"order": 1}]), "steps[1].order: 3 needs 2 earlier points"),
    (_doc(steps=[{"order": 1}, {"order": 2}, {"order": 2}]), "steps[2].order: a step to the data"),
    (_doc(steps=[{"order": 1}, {"order": 7}, {"order": 1}]), "steps[1].order: 7 is not in 1..4"),
    (_doc(steps=[{"order": 1}, {"prediction": "latent"}, {"order": 1}]), "steps[1].prediction: unknown value 'latent'"),
    (_doc(steps=[{"order": 1}, {"corrector": "magic"}, {"order": 1}]), "steps[1].corrector: unknown value 'magic'"),
    (_doc(steps=[{"order": 1}, {"estimator": "rk4"}, {"order": 1}]), "steps[1].estimator: unknown value 'rk4'"),
    (_doc(steps=[{"order": 1}, {"order": 1}, {"order": 1, "corrector": "pseudo"}]), "steps[2].corrector: the last step"),
    (_doc(steps=[{"order": 1}, {"order": 2, "derivatives": [{"active_points": [-2]}]}, {"order": 1}]),
     "steps[1].derivatives[0].active_points: -2 is not an earlier point"),
    (_doc(steps=[{"order": 1}, {"order": 2, "derivatives": []}, {"order": 1}]), "steps[1].derivatives: order 2 needs 1"),
    (_doc(steps=[{"order": 1}, {"order": 1, "colour": "red"}, {"order": 1}]), "steps[1]: unknown field 'colour'"),
    (_doc(steps=[{"order": 1}, {"prediction": "data", "estimator": "ipndm"}, {"order": 1}]), "'ipndm' integrates noise"),
    (_doc(nfe=4), "nfe: the file says 4 but its steps make 3"),
    (_doc(extra=1), "schedule: unknown field 'extra'"),
    (_doc(steps=[]), "steps: a schedule needs at least one step"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_json_names_the_field(text, message):
    with pytest.raises(ScheduleError) as info:
        Schedule.from_json(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_times_outside_the_model_range():
    s = Schedule.from_json(_doc(timesteps=[1200, 600, 300, -1]))
    with pytest.raises(ScheduleError, match=r"timesteps\[0\]: 1200 is outside the model's range \[0, 999\]"):
        compile_plan(s, NS)
    with pytest.raises(ScheduleError, match="time_domain: schedule is 'discrete_vp' but the model uses 'edm'"):
        compile_plan(s, EDM())


def test_nfe_counts_analytic_and_implicit():
    steps = (Step("data", 1, corrector=Corrector.IMPLICIT), Step("data", 2, corrector="pseudo"), Step("noise", 1))
    s = Schedule("discrete_vp", (999, 500, 100, -1), steps, analytic_first_step="zero")
    assert s.nfe == 3 - 1 + 1


def test_default_derivatives_are_filled_and_omitted_in_json():
    step = Step("data", 3)
    assert step.derivatives == (Derivative((-1, -2)), Derivative((-1, -2)))
    s = Schedule("discrete_vp", (999, 700, 400, 100), (Step(), Step(order=2), step))
    assert "derivatives" not in s.to_json()
