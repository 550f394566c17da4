"""``schedsearch search | resume | report`` as a user runs them: real processes, real SIGKILLs."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from schedsearch.solvers import Schedule
from schedsearch.storage import TrialStore
from tests.helpers import save_pipeline

SCRIPT = Path(sys.executable).with_name("schedsearch")
CONFIG = {
    "name": "mix", "model": "builtin:gmm-8d", "nfe": 4, "budget": 36, "seed": 0,
    "strategy": {"name": "evolution", "batch_size": 4},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [200, 800], "eta": 3},
    "validation": {"top_k": 2, "baselines": 2, "samples": 1000, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"threads": 1},
}


def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def write_config(path: Path, **changes) -> Path:
    data = json.loads(json.dumps(CONFIG))
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def trial_rows(url: str, name: str = "mix") -> list[tuple]:
    store = TrialStore.open(url, create=False)
    try:
        trials = store.trials(store.get_search(name))
        return [(t.number, t.schedule_hash, t.stage.value, t.fidelity, t.state.value, t.objective) for t in trials]
    finally:
        store.close()


def test_search_prints_the_table_exports_the_winner_and_plots(tmp_path):
    cfg = write_config(tmp_path / "mix.yaml")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = run("search", str(cfg), "--db", url, "-o", str(tmp_path / "out"), "-q")
    assert out.returncode == 0, out.stderr
    assert "NFE 4 — mmd (lower is better)" in out.stdout and "floor (reference solve)" in out.stdout
    assert "gap to the floor closed" in out.stdout
    best = Schedule.from_json((tmp_path / "out" / "best_nfe4.json").read_text())
    assert best.nfe == 4 and best.provenance["stage"] == "holdout"
    for png in ("progress.png", "schedule_nfe4.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    exported = run("export", "mix", "--nfe", "4", "--db", url)
    assert exported.returncode == 0 and json.loads(exported.stdout) == best.to_dict()
    before = trial_rows(url)
    report = run("report", "mix", "--db", url, "-o", str(tmp_path / "again"))
    assert report.returncode == 0, report.stderr
    assert "winner" in report.stdout and (tmp_path / "again" / "schedule_nfe4.png").exists()
    assert trial_rows(url) == before
    again = run("resume", "mix", "--db", url, "-q")  # nothing left to do: the same table
    assert again.returncode == 0 and trial_rows(url) == before
    refined = run("resume", "mix", "--db", url, "-q", "--refine", "1", "-o", str(tmp_path / "refined"))
    assert refined.returncode == 0, refined.stderr
    rows = trial_rows(url)
    assert rows[: len(before)] == before and [r[2] for r in rows[len(before):]] == ["refine", "holdout"]
    assert "refined #" in refined.stdout  # validated beside the others, in the table


def _finished(db: Path) -> int:
    """Finished trials in a search's SQLite file so far (read-only, beside the writer; 0 before it exists)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select count(*) from ss_trials where state in ('complete', 'failed')").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not made yet
        return 0


def _life(proc: subprocess.Popen, db: Path, target: int | None, delay: float) -> bool:
    """Let a search run until ``target`` trials are finished in ``db``, then ``delay`` seconds more, and SIGKILL
    it; True if it was killed, False if it ended by itself first (``target`` None: let it end)."""
    import time

    reached = None
    while proc.poll() is None:
        if target is not None and reached is None and _finished(db) >= target:
            reached = time.monotonic()
        if reached is not None and time.monotonic() - reached >= delay:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def test_sigkilled_search_resumes_to_the_uninterrupted_trials(tmp_path):
    """≥ 20 SIGKILLs at seeded random moments — anywhere from start-up to the plots, the refinement of the
    winner included — several per search; each time the same command resumes it. The moments are set by
    progress (a seeded number of finished trials, then a seeded delay), so they land everywhere whatever
    the machine's speed."""
    refine = {"top_k": 1, "iterations": 20, "samples": 200, "batch_size": 100}
    cfg = write_config(tmp_path / "mix.yaml", budget=44, refine=refine)
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    assert run("search", str(cfg), "--db", whole, "-q", "-o", str(tmp_path / "w")).returncode == 0
    expected = trial_rows(whole)
    rng = random.Random(20261124)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills, chains = 0, []
    while kills < 20:
        db = tmp_path / f"killed{len(chains)}.db"
        planned, lives = rng.randint(3, 6), 0
        while True:
            proc = subprocess.Popen([str(SCRIPT), "search", str(cfg), "--db", f"sqlite:///{db}", "-q", "-o",
                                     str(tmp_path / "k")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env=env)
            lives += 1
            target = None if lives > planned else rng.randint(_finished(db), len(expected))
            if _life(proc, db, target, rng.uniform(0.0, 0.4)):
                kills += 1
                continue
            assert proc.returncode == 0, proc.stderr.read()
            chains.append((db, lives))
            break
    for db, lives in chains:  # every killed-and-resumed search ends exactly as the uninterrupted one
        assert trial_rows(f"sqlite:///{db}") == expected, (db, lives)
    assert kills >= 20 and any(lives > 3 for _, lives in chains)
    budgeted = [row for row in expected if row[2] not in ("holdout", "refine")]
    assert len({(r[1], r[3], r[2] == "holdout") for r in expected}) == len(expected)  # nothing twice
    assert len(budgeted) >= 44 and [r for r in expected if r[2] == "refine"]


@pytest.fixture(scope="module")
def searched_db(tmp_path_factory) -> Path:
    """A SQLite file with one finished search (made once, copied by each test that changes nothing in it)."""
    folder = tmp_path_factory.mktemp("searched")
    url = f"sqlite:///{folder / 'runs.db'}"
    good = write_config(folder / "good.yaml", budget=12)
    assert run("search", str(good), "--db", url, "-q", "-o", str(folder / "o")).returncode == 0
    return folder / "runs.db"


@pytest.mark.parametrize(("change", "message"), [
    ({"bogus": 1}, "config bogus: unknown key"),
    ({"strategy": {"name": "annealing"}}, "config strategy.name: unknown strategy 'annealing' (known: random,"),
    ({"model": "builtin:nope"}, "model: unknown builtin 'nope'"),
    ({"budget": 0}, "config budget: Input should be greater than or equal to 1"),
    ({"nfe": "a"}, "config nfe: 'a': expected an integer"),
    ({"space": {"free": ["tims"]}}, "config space.free: unknown decision 'tims'"),
])
def test_bad_config_is_one_line_and_leaves_the_store_untouched(searched_db, tmp_path, change, message):
    shutil.copy(searched_db, tmp_path / "runs.db")  # a store holding one finished search
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    before = trial_rows(url)
    assert before
    bad = write_config(tmp_path / "bad.yaml", **change)
    out = run("search", str(bad), "--db", url, "-q", "--name", "other")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [f"schedsearch: error: {out.stderr.split('error: ', 1)[1].strip()}"]
    assert message in out.stderr and "Traceback" not in out.stderr
    assert trial_rows(url) == before
    store = TrialStore.open(url, create=False)
    assert [s.name for s in store.list_searches()] == ["mix"]
    store.close()


def test_existing_name_with_another_config_and_impossible_nfe_are_refused(searched_db, tmp_path, tiny_unet):
    shutil.copy(searched_db, tmp_path / "runs.db")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    before = trial_rows(url)
    out = run("search", str(write_config(tmp_path / "b.yaml", budget=12, seed=5)), "--db", url, "-q")
    assert out.returncode == 1 and "a search named 'mix' exists with a different config (seed: stored 0, given 5)" \
        in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert trial_rows(url) == before
    model = save_pipeline(tmp_path / "tiny", tiny_unet, {"num_train_timesteps": 10, "beta_schedule": "linear"})
    cfg = write_config(tmp_path / "c.yaml", model=str(model), nfe=12, name="tiny")
    out = run("search", str(cfg), "--db", url, "-q", "--engine", "local")
    assert out.returncode == 1, out.stdout
    assert "nfe: 12 needs more distinct timesteps than the model has" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert trial_rows(url) == before
