"""The trial store contract (SQLite file here; the same suite is meant for PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from schedsearch.storage import NewTrial, StoreError, TrialState, TrialStore


@pytest.fixture
def store(store_url):
    s = TrialStore.open(store_url)
    yield s
    s.close()


def _trial(i: int, nfe: int = 5) -> NewTrial:
    return NewTrial(schedule={"format": "schedsearch.schedule/1", "i": i}, schedule_hash=f"h{i}", nfe=nfe)


def test_search_lifecycle(store):
    search = store.create_search("s1", {"nfe": [5]}, "builtin:digits", "fid")
    assert store.get_search("s1") == search
    with pytest.raises(StoreError, match="a search named 's1' already exists"):
        store.create_search("s1", {}, "m", "fid")
    with pytest.raises(StoreError, match="no search named 'nope'"):
        store.get_search("nope")
    store.set_status(search, "running")
    assert store.get_search("s1").status == "running"
    assert [s.name for s in store.list_searches()] == ["s1"]


def test_queue_claim_finish_and_best(store):
    search = store.create_search("s", {}, "m", "fid")
    added = store.add_trials(search, [_trial(i, nfe=5 + i % 2) for i in range(6)])
    assert [t.number for t in added] == list(range(6)) and all(t.state is TrialState.QUEUED for t in added)
    claimed = [store.claim_trial(search, "w1") for _ in range(6)]
    assert [t.number for t in claimed] == list(range(6)) and store.claim_trial(search, "w1") is None
    for t, value in zip(claimed, [3.0, 1.0, 2.0, 0.5, None, 4.0]):
        if value is None:
            store.finish_trial(t, TrialState.FAILED, error="diverged")
        else:
            store.finish_trial(t, TrialState.COMPLETE, {"fid": value}, value, seconds=1.5)
    best = store.best(search, k=2)
    assert [t.objective for t in best] == [0.5, 1.0]
    assert [t.objective for t in store.best(search, k=5, nfe=5)] == [2.0, 3.0]
    per_nfe = store.best_per_nfe(search)
    assert {n: t.objective for n, t in per_nfe.items()} == {5: 2.0, 6: 0.5}
    failed = store.trials(search, state=TrialState.FAILED)
    assert len(failed) == 1 and failed[0].error == "diverged"


def test_stale_running_trials_become_interrupted(store):
    search = store.create_search("s", {}, "m", "fid")
    store.add_trials(search, [_trial(i) for i in range(3)])
    store.claim_trial(search, "w")
    store.claim_trial(search, "w")
    assert store.mark_stale_running(search) == 2
    assert [t.state for t in store.trials(search)] == [TrialState.INTERRUPTED] * 2 + [TrialState.QUEUED]
    counts = store.count_trials(search)
    assert counts[TrialState.INTERRUPTED] == 2 and counts[TrialState.QUEUED] == 1
    assert sum(counts.values()) == 3 and set(counts) == set(TrialState)


def test_record_trials_is_one_transaction(store):
    search = store.create_search("s", {}, "m", "fid")
    rows = store.record_trials(search, [(_trial(0), {"fid": 1.0}, 1.0, None), (_trial(1), {}, None, "nan")])
    assert [t.state for t in rows] == [TrialState.COMPLETE, TrialState.FAILED]
    with pytest.raises(AttributeError):  # caught while the rows are built, before any INSERT
        store.record_trials(search, [(_trial(2), {"fid": 2.0}, 2.0, None), (None, {}, None, None)])  # type: ignore
    assert len(store.trials(search)) == 2  # nothing of the failed batch


def _table_counts(url: str) -> dict[str, int]:
    """Rows per table, read through a connection of its own (not the store's)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("ss_trials", "ss_best_schedules")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("failure", ["metrics_not_json", "constraint"])
def test_record_trials_fails_at_flush_and_leaves_nothing(store, store_url, failure):
    """The database refuses the batch's second trial while the first is already flushed: all of it is rolled back."""
    search = store.create_search("s", {}, "m", "fid")
    store.record_trials(search, [(_trial(0), {"fid": 1.0}, 1.0, None), (_trial(1), {}, None, "nan")])
    before = [t.to_dict() for t in store.trials(search)]
    counts = _table_counts(store_url)
    good = (_trial(2), {"fid": 0.1}, 0.1, None)  # would become the best of NFE 5
    if failure == "metrics_not_json":
        bad = (_trial(3), {"fid": 0.2, "classes": {3, 7}}, 0.2, None)  # a set: not JSON, fails in the UPDATE
        # SQLAlchemy wraps the encoder's TypeError on SQLite; psycopg encodes JSON itself and lets it through.
        with pytest.raises((StatementError, TypeError), match="not JSON serializable") as excinfo:
            store.record_trials(search, [good, bad])
        error = excinfo.value
        assert isinstance(error.orig if isinstance(error, StatementError) else error, TypeError)
    else:
        bad = (NewTrial({"i": 3}, "h3", None), {"fid": 0.2}, 0.2, None)  # type: ignore[arg-type]  # nfe NOT NULL
        with pytest.raises(IntegrityError):
            store.record_trials(search, [good, bad])
    assert [t.to_dict() for t in store.trials(search)] == before
    assert _table_counts(store_url) == counts
    assert store.best_per_nfe(search)[5].number == 0
    again = store.record_trials(search, [good])  # the numbers of the failed batch were not used up
    assert [t.number for t in again] == [2] and store.best_per_nfe(search)[5].number == 2


def test_non_finite_metrics_are_stored_as_null(store):
    """An evaluation whose objective is unavailable keeps its NaN/inf metrics; PostgreSQL's json rejects those."""
    search = store.create_search("s", {}, "m", "mmd")
    metrics = {"mmd": float("nan"), "nll": float("inf"), "ref_rmse": 0.5, "per_class": [1.0, float("-inf")]}
    [trial] = store.record_trials(search, [(_trial(0), metrics, None, "objective 'mmd' unavailable")])
    expected = {"mmd": None, "nll": None, "ref_rmse": 0.5, "per_class": [1.0, None]}
    assert trial.metrics == expected and store.trials(search)[0].metrics == expected


def test_predictor_checkpoints(store):
    search = store.create_search("s", {}, "m", "fid")
    assert store.latest_predictor(search) is None
    store.save_predictor(search, b"one", {"tau": 0.1})
    store.save_predictor(search, b"two", {"tau": 0.4})
    latest = store.latest_predictor(search)
    assert latest.weights == b"two" and latest.meta == {"tau": 0.4}


def _writer(url: str, worker: str, n: int) -> None:
    store = TrialStore.open(url)
    search = store.get_search("shared")
    for i in range(n):
        store.record_trials(search, [(_trial(i), {"v": i}, float(i), None)], worker=worker)
    store.close()


def test_two_processes_write_one_database(store_url):
    url = store_url
    store = TrialStore.open(url)
    search = store.create_search("shared", {}, "m", "v")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, f"w{k}", 150)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    trials = store.trials(search)
    assert len(trials) == 300
    assert sorted(t.number for t in trials) == list(range(300))
    assert sorted((t.worker, t.metrics["v"]) for t in trials) == sorted(
        (f"w{k}", i) for k in range(2) for i in range(150))
    store.close()


def test_opening_errors(tmp_path):
    with pytest.raises(StoreError, match="database not found"):
        TrialStore.open(f"sqlite:///{tmp_path / 'absent.db'}", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        TrialStore.open(f"sqlite:///{junk}")
    assert junk.read_bytes() == b"this is not a database" * 100
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x int)").connection.commit()
    with pytest.raises(StoreError, match="is not a schedsearch database"):
        TrialStore.open(f"sqlite:///{other}", create=False, read_only=True)
    with pytest.raises(StoreError, match="cannot open database"):
        TrialStore.open("postgresql+psycopg://nobody@127.0.0.1:1/none")


def _record_forever(url: str, ready) -> None:
    store = TrialStore.open(url)
    search = store.get_search("killed")
    ready.set()
    i = 0
    while True:
        batch = [(_trial(i + k), {"v": i + k, "blob": "x" * 2000}, float(i + k), None) for k in range(10)]
        store.record_trials(search, batch, worker="victim")
        i += 10


def test_sigkill_while_recording_leaves_whole_trials(store_url):
    import os
    import signal
    import time

    store = TrialStore.open(store_url)
    search = store.create_search("killed", {}, "m", "v")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_record_forever, args=(store_url, ready))
    proc.start()
    assert ready.wait(60)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    again = TrialStore.open(store_url)
    trials = again.trials(again.get_search("killed"))
    assert trials and len(trials) % 10 == 0  # whole batches only
    assert all(t.state is TrialState.COMPLETE and t.metrics["v"] == t.objective for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert again.best(search, k=1)[0].objective == 0.0
    again.close()
    store.close()


def test_artifacts_round_trip(store):
    search = store.create_search("s", {}, "m", "fid")
    assert store.get_artifact(search, "noise_set") is None
    store.put_artifact(search, "noise_set", b"\x00\x01" * 1000, {"seed": 3, "n": 2000})
    store.put_artifact(search, "noise_set", b"\x02", {"seed": 4})
    assert store.get_artifact(search, "noise_set") == (b"\x02", {"seed": 4})


def _lost_ack(store, times: int = 1):
    """Make the next ``times`` transactions commit and then report a dropped connection, as a server
    that dies between committing and answering does."""
    from contextlib import contextmanager

    real = store._tx
    left = {"n": times}

    @contextmanager
    def tx():
        with real() as s:
            yield s
        if left["n"]:
            left["n"] -= 1
            raise sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))

    store._tx = tx
    return left


def test_writes_retried_after_a_lost_commit_acknowledgement_are_not_doubled(store_url, monkeypatch):
    lines: list[str] = []
    store = TrialStore.open(store_url, warn=lines.append)
    store._sleep = lambda s: None
    _lost_ack(store)
    search = store.create_search("s", {"a": 1}, "m", "fid")  # landed, then retried: the same search
    _lost_ack(store)
    first = store.add_trials(search, [_trial(i) for i in range(3)])
    _lost_ack(store)
    recorded = store.record_trials(search, [(_trial(9), {"fid": 1.0}, 1.0, None)])
    _lost_ack(store)
    store.finish_trial(first[0], TrialState.COMPLETE, {"fid": 2.0}, 2.0)
    trials = store.trials(search)
    assert [t.number for t in trials] == [0, 1, 2, 3] and [t.number for t in first] == [0, 1, 2]
    assert recorded[0].number == 3 and trials[0].objective == 2.0
    assert len(lines) == 8 and "retrying" in lines[0] and "back after" in lines[1], lines
    store.close()


def test_a_database_that_stays_away_ends_in_one_store_error(tmp_path):
    store = TrialStore.open(f"sqlite:///{tmp_path / 'a.db'}", retry_for=2.0, warn=lambda line: None)
    search = store.create_search("s", {}, "m", "fid")
    slept = []
    store._sleep = slept.append
    _lost_ack(store, times=10**6)
    clock = iter(range(0, 10**6))
    store._clock = lambda: float(next(clock))
    with pytest.raises(StoreError, match="unavailable for"):
        store.set_status(search, "running")
    assert slept and max(slept) <= 2.0
    store.close()


def test_only_transient_errors_are_retried():
    from schedsearch.storage.store import transient

    locked = sa.exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    missing = sa.exc.OperationalError("x", {}, sqlite3.OperationalError("no such table: ss_trials"))
    unique = sa.exc.IntegrityError("x", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert transient(locked) and not transient(missing) and not transient(unique)
    assert not transient(ValueError("x"))
