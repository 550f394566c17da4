"""Property-based bad input: whatever a user hands us ends in a result or in one named error.

Targets: mutated schedule JSON (parsed, checked against a model, sampled, evaluated),
mutated search configs, model directories with missing, truncated or corrupt files, and
schedules that blow up numerically. "Named" means one of the project's own error types, with
a one-line message — not a ``KeyError`` or ``TypeError`` escaping from the code, which the
command line would print as one line too, but which would be a bug. Run with
``--hypothesis-show-statistics`` to see how many inputs each target tried.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schedsearch.search.compare import default_evaluator
from schedsearch.search.config import ConfigError, parse_config
from schedsearch.solvers import ModelLoadError, Schedule, ScheduleError, SolverError, load_model, sample

from tests.helpers import save_pipeline
from tests.strategies import discrete_schedules

MODEL = load_model("builtin:gmm-ring")  # discrete VP, 1000 timesteps, like the schedules below
EVALUATOR = default_evaluator(MODEL, num_samples=64, seed=0)
NOISE = torch.randn(16, *MODEL.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6) | st.sampled_from(["data", "noise", "pseudo", "implicit", "bh2", "ipndm", "zero", "-1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into a JSON value (the root excluded)."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


@st.composite
def mutated(draw, document: Any, max_edits: int = 3) -> Any:
    """``document`` with 1–3 edits: a value replaced by random JSON, a key dropped, or a key added."""
    data = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    return data


def _one_line(exc: Exception) -> None:
    assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)


@fuzz(800)
@given(data=st.data())
def test_mutated_schedule_json_is_a_schedule_or_one_named_error(data):
    document = data.draw(discrete_schedules(max_steps=6)).to_dict()
    text = json.dumps(data.draw(mutated(document)), allow_nan=True)
    if data.draw(st.integers(0, 9)) == 0:
        text = text[: data.draw(st.integers(0, len(text)))]  # a truncated file
    try:
        schedule = Schedule.from_json(text)
        schedule.check_for(MODEL.noise_schedule)
    except ScheduleError as exc:
        _one_line(exc)
        return
    try:
        x = sample(MODEL, schedule, NOISE)
    except SolverError as exc:  # e.g. an analytical first step the model cannot take
        _one_line(exc)
        return
    assert x.shape == NOISE.shape
    result = EVALUATOR.evaluate(schedule)  # never raises: a bad schedule is a failed trial with its reason
    assert result.failed == (result.objective is None)
    if result.failed:
        assert result.error and "\n" not in result.error


@fuzz(100)
@given(data=st.data())
def test_mutated_schedule_files_through_the_command_line(data, tmp_path, capsys):
    """``schedsearch sample FILE``: exit 0 with samples written, or exit 1 with one line that is ours."""
    import re

    from schedsearch.search.cli import main

    document = data.draw(discrete_schedules(max_steps=5)).to_dict()
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(data.draw(mutated(document)), allow_nan=True))
    out = tmp_path / "x.pt"
    out.unlink(missing_ok=True)
    code = main(["sample", str(path), "--model", "builtin:gmm-ring", "-n", "8", "--out", str(out)])
    err = capsys.readouterr().err
    if code == 0:
        assert out.exists()
        return
    assert code == 1 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith("schedsearch: error: ")
    assert not re.match(r"schedsearch: error: [A-Z]\w*(Error|Exception)\b", err), err  # a bug, not a message


QUICKSTART = {
    "name": "q", "model": "builtin:digits", "nfe": 5, "budget": 120, "seed": 0, "space": {"free": "usf"},
    "strategy": {"name": "evolution", "batch_size": 4},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [250, 1000], "eta": 3},
    "validation": {"top_k": 3, "baselines": 3, "samples": 2000, "seed": 1},
    "engine": {"kind": "local"}, "metrics": {"reference_steps": 100},
}


@fuzz(800)
@given(config=mutated(QUICKSTART, max_edits=4))
@example(config={**QUICKSTART, "\n": None})  # found by this test: a key holding a newline
def test_mutated_configs_are_valid_or_one_error_naming_the_key(config):
    try:
        parsed = parse_config(config)
    except ConfigError as exc:
        _one_line(exc)
        assert str(exc).startswith(("config ", "config: ")), str(exc)
        return
    assert parsed.budget >= 1 and parsed.nfe and all(isinstance(n, int) and n >= 1 for n in parsed.nfe)
    assert all(s >= 1 for s in parsed.fidelity.samples)
    assert parsed.validation.seed != parsed.noise_seed


@pytest.fixture(scope="module")
def pipeline_dir(tiny_unet, tmp_path_factory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("fuzz") / "pipe", tiny_unet,
                         {"num_train_timesteps": 1000, "beta_schedule": "linear"})


def _damage(root: Path, draw: Any) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    target = draw(st.sampled_from(files))
    action = draw(st.sampled_from(["delete", "truncate", "garbage", "flip"]))
    raw = target.read_bytes()
    if action == "delete":
        target.unlink()
    elif action == "truncate":
        target.write_bytes(raw[: draw(st.integers(0, max(0, len(raw) - 1)))])
    elif action == "garbage":
        target.write_bytes(draw(st.binary(max_size=64)))
    else:
        k = draw(st.integers(0, max(0, len(raw) - 1)))
        target.write_bytes(raw[:k] + bytes([raw[k] ^ 0xFF]) + raw[k + 1:] if raw else b"\xff")
    return f"{action} {target.relative_to(root)}"


@fuzz(120)
@given(data=st.data())
def test_damaged_model_directories_load_or_fail_with_one_named_error(pipeline_dir, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pipe"
        shutil.copytree(pipeline_dir, root)
        what = _damage(root, data.draw)
        try:
            model = load_model(root, device="cpu")
        except ModelLoadError as exc:
            _one_line(exc)
            return
        except SolverError as exc:  # a readable but meaningless scheduler config (unknown prediction type, …)
            _one_line(exc)
            return
        # loaded anyway (a flipped byte in a weight, an unused file): sampling works or says why not
        noise = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(1))
        try:
            x = sample(model, Schedule.from_dict({"format": "schedsearch.schedule/1", "time_domain": "discrete_vp",
                                                  "timesteps": [999, 500, -1], "steps": [{"order": 1}, {"order": 1}]}),
                       noise, cond=torch.tensor([0, 1]))
        except SolverError as exc:
            _one_line(exc)
            return
        assert x.shape == noise.shape, what


@fuzz(300)
@given(schedule=discrete_schedules(max_steps=6), relaxation=st.sampled_from([1e3, 1e8, 1e30, -1e12, 1e-30]))
def test_schedules_that_blow_up_are_failed_trials_with_a_reason(schedule, relaxation):
    from dataclasses import replace

    from schedsearch.solvers import Derivative

    steps = tuple(replace(s, derivatives=tuple(Derivative(d.active_points, relaxation) for d in s.derivatives))
                  for s in schedule.steps)
    try:
        wild = replace(schedule, steps=steps)
    except ScheduleError as exc:
        _one_line(exc)
        return
    result = EVALUATOR.evaluate(wild)
    if result.failed:
        assert result.objective is None and result.error
        assert result.error.startswith(("non-finite samples", "diverged", "illegal schedule", "objective"))
    else:
        assert math.isfinite(result.objective)


def test_an_exploding_schedule_is_a_failed_trial_with_its_reason():
    """The property above holds trivially if nothing explodes: one schedule that surely does."""
    from dataclasses import replace

    from schedsearch.solvers import Derivative, baseline

    base = baseline("dpmpp_3m", 6, MODEL)
    steps = tuple(replace(s, derivatives=tuple(Derivative(d.active_points, 1e30) for d in s.derivatives))
                  for s in base.steps)
    result = EVALUATOR.evaluate(replace(base, steps=steps))
    assert result.failed and result.objective is None
    assert result.error.startswith(("non-finite samples", "diverged")), result.error
