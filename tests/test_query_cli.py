"""schedsearch searches / trials / export on real databases, read-only."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from schedsearch.solvers import Schedule, baseline, load_model
from schedsearch.storage import NewTrial, TrialStore

SCRIPT = Path(sys.executable).with_name("schedsearch")
MODEL = load_model("builtin:gmm-ring")


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def filled(store_url):
    store = TrialStore.open(store_url)
    search = store.create_search("ring", {"nfe": [4, 5]}, "builtin:gmm-ring", "mmd")
    results = []
    for i, (name, nfe) in enumerate([("ddim", 4), ("dpmpp_2m", 4), ("unipc_bh2", 5), ("ipndm", 5), ("dpmpp_3m", 5)]):
        s = baseline(name, nfe, MODEL)
        trial = NewTrial(s.to_dict(), s.canonical_hash(), s.nfe)
        error = "diverged" if name == "dpmpp_3m" else None
        value = None if error else 0.1 * (5 - i)
        results.append((trial, {} if error else {"mmd": value, "ref_rmse": value / 2}, value, error))
    store.record_trials(search, results, worker="w0")
    store.close()
    return store_url


def test_searches_lists_with_counts(filled):
    out = run("searches", "--db", filled, "--format", "json")
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert row["name"] == "ring" and row["trials"] == 5 and row["complete"] == 4
    table = run("searches", "--db", filled).stdout
    assert table.splitlines()[0].split()[:3] == ["name", "status", "model"]


def test_trials_filters_and_formats(filled):
    out = run("trials", "ring", "--db", filled, "--format", "json")
    rows = json.loads(out.stdout)
    assert len(rows) == 5
    for key in ("number", "state", "nfe", "objective", "metrics", "schedule"):
        assert all(key in r for r in rows)
    top = json.loads(run("trials", "ring", "--top", "2", "--db", filled, "--format", "json").stdout)
    assert [r["objective"] for r in top] == pytest.approx([0.2, 0.3])
    nfe4 = json.loads(run("trials", "ring", "--nfe", "4", "--db", filled, "--format", "json").stdout)
    assert {r["nfe"] for r in nfe4} == {4} and len(nfe4) == 2
    failed = json.loads(run("trials", "ring", "--state", "failed", "--db", filled, "--format", "json").stdout)
    assert [r["error"] for r in failed] == ["diverged"]
    text = run("trials", "ring", "--db", filled, "--format", "csv").stdout
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 5 and Schedule.from_dict(json.loads(parsed[0]["schedule"])).nfe == 4


def test_export_writes_valid_schedule_json(filled, tmp_path):
    out = run("export", "ring", "-o", str(tmp_path / "best.json"), "--db", filled)
    assert out.returncode == 0, out.stderr
    best = Schedule.from_json((tmp_path / "best.json").read_text())
    assert best.provenance["search"] == "ring" and best.provenance["metrics"]["mmd"] == pytest.approx(0.2)
    assert best == baseline("ipndm", 5, MODEL)
    at4 = json.loads(run("export", "ring", "--nfe", "4", "--db", filled).stdout)
    assert at4["nfe"] == 4 and at4["provenance"]["trial"] == 1


def test_env_var_selects_the_database(filled):
    out = run("trials", "ring", "--top", "1", "--format", "json", env={"SCHEDSEARCH_DB": filled})
    assert out.returncode == 0 and json.loads(out.stdout)[0]["objective"] == pytest.approx(0.2)


def test_read_only_commands_never_write(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = TrialStore.open(url)
    search = store.create_search("s", {}, "builtin:gmm-ring", "mmd")
    schedules = [baseline(name, 4, MODEL) for name in ("ddim", "dpmpp_2m")]
    store.record_trials(search, [(NewTrial(s.to_dict(), s.canonical_hash(), s.nfe), {"mmd": v}, v, None)
                                 for s, v in zip(schedules, (0.3, 0.1))])
    store.close()
    for leftover in tmp_path.glob("db.sqlite-*"):
        leftover.unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    outputs = {}
    commands = (["searches"], ["trials", "s"], ["trials", "s", "--top", "3"], ["export", "s"],
                ["export", "s", "--nfe", "4"])
    for args in commands:
        out = run(*args, "--db", url)
        assert out.returncode == 0, (args, out.stderr)
        outputs[" ".join(args)] = out.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert Schedule.from_json(outputs["export s"]) == schedules[1]
    assert outputs["searches"].splitlines()[1].split()[:2] == ["s", "created"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["trials", "x'; DROP TABLE ss_trials; --"], "no search named \"x'; DROP TABLE ss_trials; --\""),
        (["trials", "ring", "--state", "odd"], "--state: unknown 'odd'"),
        (["export", "nobody"], "no search named 'nobody'"),
    ],
)
def test_bad_queries_are_one_line(filled, args, message):
    out = run(*args, "--db", filled)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [f"schedsearch: error: {message}"] or message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert json.loads(run("trials", "ring", "--db", filled, "--format", "json").stdout)  # nothing damaged


def test_bad_databases_are_one_line(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all " * 50)
    cases = [
        (["searches", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "cannot open database"),
        (["searches", "--db", f"sqlite:///{junk}"], "cannot open database"),
        (["searches", "--db", f"sqlite:///{tmp_path / 'absent.db'}"], "database not found"),
        (["searches", "--db", "nosuchdialect://x"], "database URL"),
    ]
    newer = tmp_path / "newer.db"
    TrialStore.open(f"sqlite:///{newer}").close()
    import sqlite3

    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE schedsearch_alembic_version SET version_num = '0999'")
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    newer_bytes = newer.read_bytes()
    cases.append((["searches", "--db", f"sqlite:///{newer}"], "is newer than this schedsearch"))
    for args, message in cases:
        out = run(*args)
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert message in out.stderr
    assert junk.read_text() == "not a database at all " * 50
    assert newer.read_bytes() == newer_bytes
