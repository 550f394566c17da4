"""The README's Python snippets run as written, and its schedule JSON loads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_snippet_runs(index, tmp_path, monkeypatch):
    shutil.copytree(README.parent / "configs", tmp_path / "configs")  # snippets run from the repository root
    monkeypatch.chdir(tmp_path)  # the trial-store snippet writes runs.db here
    exec(compile(_blocks("python")[index], f"README.md python block {index}", "exec"), {})


def test_schedule_json_loads():
    from schedsearch.solvers import Schedule, load_model

    [text] = _blocks("json")
    schedule = Schedule.from_json(text)
    assert schedule.guidance_scale == 2.0 and schedule.nfe == 6
    schedule.check_for(load_model("builtin:gmm-ring").noise_schedule)
