"""Schema migrations: upgrades keep data, newer schemas are refused untouched, Optuna can share the DB."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedsearch.storage import NewTrial, StoreError, TrialStore
from schedsearch.storage import migrate
from schedsearch.storage.models import Base


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def test_older_database_is_upgraded_without_losing_data(store_url):
    engine = _engine(store_url)
    with engine.begin() as conn:
        migrate.upgrade(conn, "0001")
        conn.execute(sa.text(
            "INSERT INTO ss_searches (id, name, config, model_ref, objective, status, created_at, updated_at) "
            "VALUES (1, 'old', '{\"a\": 1}', 'builtin:digits', 'fid', 'done', '2026-01-01', '2026-01-01')"))
        conn.execute(sa.text(
            "INSERT INTO ss_trials (search_id, number, state, schedule, schedule_hash, nfe, metrics, objective, "
            "created_at) VALUES (1, 0, 'complete', '{\"x\": 1}', 'h', 5, '{\"fid\": 3.5}', 3.5, '2026-01-01')"))
        assert "ss_artifacts" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    with pytest.raises(StoreError, match=f"older than '{migrate.head_revision()}'"):
        TrialStore.open(store_url, read_only=True)
    store = TrialStore.open(store_url)
    search = store.get_search("old")
    assert search.config == {"a": 1}
    [trial] = store.trials(search)
    assert trial.metrics == {"fid": 3.5} and trial.objective == 3.5
    with store.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision() == "0003"
        assert "ss_artifacts" in sa.inspect(conn).get_table_names()
    store.add_trials(search, [NewTrial({"y": 2}, "h2", 6)])
    assert [t.number for t in store.trials(search)] == [0, 1]
    store.close()


def _snapshot(url: str) -> object:
    """Everything a write could change, read after every engine is disposed.

    SQLite: the WAL checkpointed into the main file first (a write may sit in the WAL while the
    main file's bytes stay the same), then the full ``iterdump()``, the header pragmas that
    ``iterdump`` leaves out, and the file's bytes. PostgreSQL: every table's columns and rows.
    """
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        conn = sqlite3.connect(path)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0, "a connection still holds the database"
            dump = list(conn.iterdump())
            pragmas = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("user_version", "application_id")}
        finally:
            conn.close()
        return dump, pragmas, path.read_bytes()
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for table in sorted(sa.inspect(conn).get_table_names()):
                columns = [(c["name"], str(c["type"])) for c in sa.inspect(conn).get_columns(table)]
                rows = sorted(repr(tuple(r)) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"')))
                out[table] = (columns, rows)
            return out
    finally:
        engine.dispose()


def test_newer_schema_is_refused_and_left_untouched(store_url):
    store = TrialStore.open(store_url)
    search = store.create_search("kept", {"nfe": [5]}, "builtin:gmm-ring", "mmd")
    store.add_trials(search, [NewTrial({"i": i}, f"h{i}", 5) for i in range(3)])
    store.claim_trial(search, "w0")  # a running trial, for any "repair on open" to find
    store.close()
    engine = _engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0999'"))
    engine.dispose()
    before = _snapshot(store_url)
    for read_only in (False, True):
        with pytest.raises(StoreError, match="schema '0999' is newer than this schedsearch"):
            TrialStore.open(store_url, read_only=read_only)
    after = _snapshot(store_url)
    if store_url.startswith("sqlite"):
        assert after[1] == before[1]  # pragmas first: the clearest message
        assert after[0] == before[0]
        assert after[2] == before[2]  # and not a byte of the file
    assert after == before
    engine = _engine(store_url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == "0999"
    engine.dispose()


def test_optuna_shares_the_database(store_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=store_url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    store = TrialStore.open(store_url)
    store.create_search("mine", {}, "m", "fid")
    with store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {"alembic_version", migrate.VERSION_TABLE, "ss_trials", "studies"} <= tables
        optuna_version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        ctx = MigrationContext.configure(conn, opts={"include_object": migrate.include_object,
                                                     "version_table": migrate.VERSION_TABLE})
        assert compare_metadata(ctx, Base.metadata) == []  # models == migrations; Optuna's tables ignored
    assert len(optuna.load_study(study_name="s", storage=store_url).trials) == 3
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == optuna_version
    store.close()
