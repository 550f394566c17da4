"""``schedsearch predictor`` on a real predictor-guided search: held-out τ against trivial rankers, the
scatter plot, ``--score`` with the stored checkpoint, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from schedsearch.predictors.predictor import Predictor
from schedsearch.search.cli import main
from schedsearch.solvers import baseline, load_model
from schedsearch.storage import TrialStore

SCRIPT = Path(sys.executable).with_name("schedsearch")
CONFIG = {
    "name": "mix", "model": "builtin:gmm-8d", "nfe": [4, 6], "budget": 200, "seed": 0,
    "strategy": {"name": "guided", "batch_size": 4,
                 "options": {"initial": 40, "round_size": 12, "candidates": 300, "epochs": 100, "spectrum": True}},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [400]},
    "validation": {"top_k": 1, "baselines": 1, "samples": 400, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"threads": 1},
}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guided")
    (folder / "mix.yaml").write_text(yaml.safe_dump(CONFIG))
    url = f"sqlite:///{folder / 'runs.db'}"
    out = run("search", str(folder / "mix.yaml"), "--db", url, "-o", str(folder / "out"), "-q")
    assert out.returncode == 0, out.stderr
    return folder, url


def test_held_out_tau_beats_trivial_rankers_and_is_plotted(searched, capsys):
    folder, url = searched
    plot = folder / "scatter.png"
    assert main(["predictor", "mix", "--db", url, "--format", "json", "--plot", str(plot), "--epochs", "150"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trials"] >= 180 and report["folds"] == 5
    assert set(report["kendall_tau_per_nfe"]) == {"4", "6"}
    trivial = report["trivial_rankers"]
    assert report["kendall_tau"] > 0.4, json.dumps(report)
    assert report["kendall_tau"] > max(trivial["higher_order"], trivial["uniform_lambda"]) + 0.1, report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["stored"]["trials"] >= 40 and report["stored"]["round"] >= 2  # the guided search's checkpoint

    assert main(["predictor", "mix", "--db", url, "--plot", "-", "--epochs", "20", "--no-spectrum"]) == 0
    text = capsys.readouterr().out
    assert "held-out Kendall τ" in text and "higher-order" in text and "uniform-λ" in text


def test_score_ranks_ones_own_schedules_with_the_stored_predictor(searched, tmp_path, capsys):
    _, url = searched
    model = load_model("builtin:gmm-8d")
    schedules = [baseline(name, 4, model) for name in ("dpmpp_2m", "ipndm", "unipc_bh2")]
    (tmp_path / "mine.json").write_text(json.dumps([s.to_dict() for s in schedules]))
    out = run("predictor", "mix", "--db", url, "--score", str(tmp_path / "mine.json"))
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)
    store = TrialStore.open(url, create=False)
    data, meta = store.get_artifact(store.get_search("mix"), "predictor")
    store.close()
    stored = Predictor.from_bytes(data, meta["checkpoint"], model.noise_schedule)
    assert stored.spectrum is not None  # the guided search's predictor read the model's spectrum
    assert np.allclose(scores, stored.predict(schedules), atol=1e-6)
    assert main(["predictor", "mix", "--db", url, "--score", str(tmp_path / "mine.json"), "--refit",
                 "--epochs", "20"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


@pytest.mark.parametrize(("content", "message"), [
    (None, "not found"),
    ("{", "not JSON"),
    ('{"a": 1}', "expected a non-empty JSON list of schedules"),
    ("[]", "expected a non-empty JSON list of schedules"),
    ('[{"timesteps": [1, 2]}]', "schedule 0"),
])
def test_bad_score_files_are_one_line(searched, tmp_path, capsys, content, message):
    _, url = searched
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    before = Path(url.removeprefix("sqlite:///")).read_bytes()
    assert main(["predictor", "mix", "--db", url, "--score", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert Path(url.removeprefix("sqlite:///")).read_bytes() == before


def test_unknown_search_and_too_few_trials_are_one_line(searched, capsys):
    _, url = searched
    for args, message in ((["nope"], "nope"), (["mix", "--folds", "500"], "too few for 500-fold")):
        assert main(["predictor", *args, "--db", url, "--plot", "-"]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_model_whose_spectrum_cannot_be_measured_ranks_without_it(capsys):
    from types import SimpleNamespace

    from schedsearch.search.cli.predictor import _spectrum

    args = SimpleNamespace(spectrum=True)
    search = SimpleNamespace(config={"seed": 0, "guidance_scale": 2.0})  # the mixture has no unconditional input
    assert _spectrum(args, search, load_model("builtin:gmm-ring")) is None
    assert "spectrum cannot be measured (guidance_scale needs conditioning" in capsys.readouterr().err
    assert _spectrum(args, SimpleNamespace(config={"seed": 0}), load_model("builtin:gmm-ring")) is not None
