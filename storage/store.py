"""The trial store: every search and trial, the single source of truth for resume and queries.

One SQLAlchemy implementation serves SQLite (a file; WAL, busy timeout, foreign keys,
write transactions taken with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of
failing) and PostgreSQL (by URL). Every write is one transaction: a crash leaves a
trial either fully recorded or absent.

Once open, a store rides out transient database faults — the server restarted, a connection
dropped, a lock held too long — by running the whole transaction again with backoff, for up
to ``retry_for`` seconds, saying so in one line when the outage starts and when it ends. Every
write is safe to run twice: updates are idempotent, and an insert whose commit may have
landed before the connection broke checks for its own rows before inserting again.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, case, create_engine, event, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import migrate
from .models import ArtifactRow, BestScheduleRow, PredictorCheckpointRow, SearchRow, TrialRow
from .records import NewTrial, PredictorCheckpoint, SearchRecord, Stage, TrialRecord, TrialState

DEFAULT_DB = "sqlite:///schedsearch.db"
DEFAULT_RETRY_SECONDS = 300.0
T = TypeVar("T")

# PostgreSQL error classes worth a retry: connection exceptions, the server shutting down or
# starting up, too many connections, serialization failures and deadlocks.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")


class StoreError(Exception):
    """A problem with the database a user can act on (unreachable, not ours, unknown search)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sqlite_engine(url: str, read_only: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun explicitly below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA foreign_keys = ON")
        if not read_only:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def transient(exc: BaseException) -> bool:
    """Whether a database error is worth running the transaction again (the database may come back)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code:
        return str(code).startswith(_TRANSIENT_SQLSTATES)
    message = str(orig).lower()
    if type(orig).__module__.startswith("sqlite3"):
        return "locked" in message or "busy" in message
    return True  # a driver-level OperationalError without a SQL state: the connection itself failed


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _retrying(method: Callable[..., T]) -> Callable[..., T]:
    """Run a store method again, with backoff, while the database has a transient fault."""

    @functools.wraps(method)
    def wrapper(self: TrialStore, *args: Any, **kwargs: Any) -> T:
        return self._retry(lambda attempt: method(self, *args, **kwargs))

    return wrapper


class TrialStore:
    """Searches, trials, best schedules and predictor checkpoints in one SQL database."""

    def __init__(self, engine: Engine, *, retry_for: float = DEFAULT_RETRY_SECONDS,
                 warn: Callable[[str], None] = _stderr, sleep: Callable[[float], None] = time.sleep) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self.retry_for = retry_for
        self.warn = warn
        self._sleep = sleep
        self._clock = time.monotonic

    def _retry(self, body: Callable[[int], T]) -> T:
        """``body(attempt)`` until it returns, or a non-transient error, or ``retry_for`` seconds of faults.

        ``attempt`` counts from 0, so a write can tell that an earlier run may have committed.
        """
        attempt, since, delay = 0, None, 0.25
        while True:
            try:
                result = body(attempt)
            except DBAPIError as exc:
                if not transient(exc):
                    raise
                now = self._clock()
                if since is None:
                    since = now
                    self.warn(f"schedsearch: warning: database {self.engine.url!r} unavailable ({_reason(exc)}); "
                              f"retrying for up to {self.retry_for:.0f} s")
                elif now - since >= self.retry_for:
                    raise StoreError(f"database {self.engine.url!r} unavailable for {now - since:.0f} s: "
                                     f"{_reason(exc)}") from None
                self._sleep(min(delay, max(0.0, since + self.retry_for - now)))
                delay = min(delay * 2, 5.0)
                attempt += 1
                continue
            if since is not None:
                self.warn(f"schedsearch: database {self.engine.url!r} back after {self._clock() - since:.0f} s; "
                          "continuing")
            return result

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str = DEFAULT_DB, *, create: bool = True, read_only: bool = False,
             retry_for: float = DEFAULT_RETRY_SECONDS, warn: Callable[[str], None] = _stderr) -> TrialStore:
        """Open (and with ``create`` initialise) the store at ``url``; one clear error otherwise.

        Opening does not wait for an unreachable database (the URL may simply be wrong); once
        open, transient faults are retried for ``retry_for`` seconds (``warn`` hears of them)."""
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.exists() and not create:
                raise StoreError(f"database not found: {path}")
            engine = _sqlite_engine(url, read_only)
        else:
            try:
                engine = create_engine(url, pool_pre_ping=True)
            except Exception as exc:  # bad URL or missing driver
                raise StoreError(f"database URL {url!r}: {exc}") from None
        try:
            with engine.begin() as conn:
                _prepare_schema(conn, create=create, read_only=read_only)
        except DBAPIError as exc:
            engine.dispose()
            raise StoreError(f"cannot open database {engine.url!r}: {str(exc.orig).strip().splitlines()[0]}") from None
        except StoreError:
            engine.dispose()
            raise
        return cls(engine, retry_for=retry_for, warn=warn)

    @property
    def url(self) -> str:
        """The database URL (with its password), e.g. for an Optuna study in the same database."""
        return self.engine.url.render_as_string(hide_password=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._session() as session, session.begin():
            yield session

    # -- searches --------------------------------------------------------------------------

    def create_search(self, name: str, config: Mapping[str, Any], model_ref: str, objective: str) -> SearchRecord:
        def once(attempt: int) -> SearchRecord:
            try:
                with self._tx() as s:
                    row = SearchRow(name=name, config=dict(config), model_ref=model_ref, objective=objective)
                    s.add(row)
                    s.flush()
                    return _search(row)
            except IntegrityError:
                if attempt:  # an earlier attempt's commit may have landed before its connection broke
                    with self._tx() as s:
                        row = s.scalar(select(SearchRow).where(SearchRow.name == name))
                        if row is not None and row.config == dict(config) and not s.scalar(
                                select(func.count()).select_from(TrialRow).where(TrialRow.search_id == row.id)):
                            return _search(row)
                raise StoreError(f"a search named {name!r} already exists") from None

        return self._retry(once)

    @_retrying
    def get_search(self, name: str) -> SearchRecord:
        with self._tx() as s:
            row = s.scalar(select(SearchRow).where(SearchRow.name == name))
            if row is None:
                raise StoreError(f"no search named {name!r}")
            return _search(row)

    @_retrying
    def list_searches(self) -> list[SearchRecord]:
        with self._tx() as s:
            return [_search(r) for r in s.scalars(select(SearchRow).order_by(SearchRow.id))]

    @_retrying
    def update_config(self, search: SearchRecord, config: Mapping[str, Any]) -> SearchRecord:
        """Replace a search's stored config (e.g. a larger budget on resume)."""
        with self._tx() as s:
            row = s.get(SearchRow, search.id)
            if row is None:
                raise StoreError(f"no search named {search.name!r}")
            row.config, row.updated_at = dict(config), _now()
            s.flush()
            return _search(row)

    @_retrying
    def set_status(self, search: SearchRecord, status: str) -> None:
        with self._tx() as s:
            s.execute(update(SearchRow).where(SearchRow.id == search.id).values(status=status, updated_at=_now()))

    # -- trials ----------------------------------------------------------------------------

    def _insert(self, s: Session, search: SearchRecord, trials: Sequence[NewTrial], state: TrialState,
                worker: str | None) -> list[TrialRow]:
        """Insert trials with the next consecutive numbers of the search (inside a write transaction)."""
        if self.engine.dialect.name == "postgresql":  # serialise numbering per search
            s.execute(select(SearchRow.id).where(SearchRow.id == search.id).with_for_update())
        start = s.scalar(select(func.coalesce(func.max(TrialRow.number), -1)).where(
            TrialRow.search_id == search.id)) + 1
        now = _now()
        rows = [
            TrialRow(search_id=search.id, number=start + i, state=state.value, schedule=dict(t.schedule),
                     schedule_hash=t.schedule_hash, nfe=t.nfe, fidelity=t.fidelity, predicted=t.predicted,
                     stage=Stage(t.stage).value, meta=dict(t.meta) or None, metrics={}, worker=worker,
                     created_at=now, started_at=None if state is TrialState.QUEUED else now)
            for i, t in enumerate(trials)
        ]
        s.add_all(rows)
        s.flush()
        return rows

    def add_trials(self, search: SearchRecord, trials: Sequence[NewTrial], state: TrialState = TrialState.QUEUED,
                   worker: str | None = None,
                   artifacts: Mapping[str, tuple[bytes, Mapping[str, Any]]] | None = None) -> list[TrialRecord]:
        """Enqueue trials with consecutive numbers — and store ``artifacts`` (kind → (data, meta)) — in one
        transaction (a strategy's state is saved with the trials it asked for)."""
        def once(attempt: int) -> list[TrialRecord]:
            with self._tx() as s:
                if attempt and (landed := _landed(s, search, trials)) is not None:
                    return landed
                rows = self._insert(s, search, trials, TrialState(state), worker)
                for kind, (data, meta) in (artifacts or {}).items():
                    _put_artifact(s, search, kind, data, meta)
                return [_trial(r) for r in rows]

        return self._retry(once)

    @_retrying
    def start_trials(self, search: SearchRecord, numbers: Sequence[int], worker: str | None) -> None:
        """Queued trials become running (taken by ``worker``)."""
        if not numbers:
            return
        with self._tx() as s:
            s.execute(update(TrialRow).where(TrialRow.search_id == search.id, TrialRow.number.in_(list(numbers)),
                                             TrialRow.state == TrialState.QUEUED.value)
                      .values(state=TrialState.RUNNING.value, worker=worker, started_at=_now()))

    @_retrying
    def requeue(self, search: SearchRecord) -> int:
        """Running and interrupted trials (their driver died or stopped) go back to the queue."""
        with self._tx() as s:
            result = s.execute(update(TrialRow).where(
                TrialRow.search_id == search.id,
                TrialRow.state.in_([TrialState.RUNNING.value, TrialState.INTERRUPTED.value]),
            ).values(state=TrialState.QUEUED.value, worker=None, started_at=None))
            return int(result.rowcount or 0)

    @_retrying
    def claim_trial(self, search: SearchRecord, worker: str) -> TrialRecord | None:
        """Atomically move the oldest queued trial to running (None when the queue is empty)."""
        with self._tx() as s:
            query = select(TrialRow).where(TrialRow.search_id == search.id, TrialRow.state == TrialState.QUEUED.value)
            query = query.order_by(TrialRow.number).limit(1)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = s.scalar(query)
            if row is None:
                return None
            row.state, row.worker, row.started_at = TrialState.RUNNING.value, worker, _now()
            s.flush()
            return _trial(row)

    @_retrying
    def finish_trial(self, trial: TrialRecord, state: TrialState, metrics: Mapping[str, Any] | None = None,
                     objective: float | None = None, error: str | None = None,
                     seconds: float | None = None, worker: str | None = None) -> TrialRecord:
        """Record a trial's result and, in the same transaction, the best schedule for its NFE."""
        if state not in (TrialState.COMPLETE, TrialState.FAILED, TrialState.PRUNED):
            raise ValueError(f"finish_trial: state must be complete, failed or pruned, not {state}")
        with self._tx() as s:
            row = s.get(TrialRow, trial.id)
            if row is None:
                raise StoreError(f"trial {trial.number} no longer exists")
            if row.state in (TrialState.COMPLETE.value, TrialState.FAILED.value, TrialState.PRUNED.value):
                return _trial(row)  # a late duplicate result: the first one stands
            if worker is not None:
                row.worker = worker
            _finish(s, row, state, metrics, objective, error, seconds)
            return _trial(row)

    def record_trials(self, search: SearchRecord,
                      results: Sequence[tuple[NewTrial, Mapping[str, Any], float | None, str | None]],
                      worker: str | None = None) -> list[TrialRecord]:
        """Add finished trials (trial, metrics, objective, error) in one transaction: all or none."""
        def once(attempt: int) -> list[TrialRecord]:
            with self._tx() as s:
                if attempt and (landed := _landed(s, search, [r[0] for r in results])) is not None:
                    return landed
                rows = self._insert(s, search, [r[0] for r in results], TrialState.RUNNING, worker)
                for row, (_, metrics, objective, error) in zip(rows, results):
                    state = TrialState.FAILED if error else TrialState.COMPLETE
                    _finish(s, row, state, metrics, objective, error, None)
                return [_trial(r) for r in rows]

        return self._retry(once)

    @_retrying
    def mark_stale_running(self, search: SearchRecord) -> int:
        """Running trials of a search that was killed become interrupted (to be re-queued)."""
        with self._tx() as s:
            result = s.execute(update(TrialRow).where(
                TrialRow.search_id == search.id, TrialRow.state == TrialState.RUNNING.value
            ).values(state=TrialState.INTERRUPTED.value))
            return int(result.rowcount or 0)

    @_retrying
    def trials(self, search: SearchRecord, state: TrialState | None = None, nfe: int | None = None,
               stage: Stage | None = None, since: int | None = None) -> list[TrialRecord]:
        """Trials in number order, optionally of one state, NFE, stage, or numbered ``since`` and above."""
        with self._tx() as s:
            query = select(TrialRow).where(TrialRow.search_id == search.id)
            if state is not None:
                query = query.where(TrialRow.state == TrialState(state).value)
            if nfe is not None:
                query = query.where(TrialRow.nfe == nfe)
            if stage is not None:
                query = query.where(TrialRow.stage == Stage(stage).value)
            if since is not None:
                query = query.where(TrialRow.number >= since)
            return [_trial(r) for r in s.scalars(query.order_by(TrialRow.number))]

    @_retrying
    def count_trials(self, search: SearchRecord) -> dict[TrialState, int]:
        """How many trials of the search are in each state (one grouped query)."""
        with self._tx() as s:
            rows = s.execute(select(TrialRow.state, func.count()).where(TrialRow.search_id == search.id)
                             .group_by(TrialRow.state))
            counts = dict.fromkeys(TrialState, 0)
            counts.update({TrialState(state): int(n) for state, n in rows})
            return counts

    @_retrying
    def best(self, search: SearchRecord, k: int = 1, nfe: int | None = None, stage: Stage | None = None,
             fidelity: int | None = None) -> list[TrialRecord]:
        """The k best complete trials (optionally of one NFE, stage or fidelity).

        Objectives are only comparable on the same noise and sample count, so trials rank first by
        how they were measured — held-out before search noise, more samples before fewer — then by
        objective (as the best-schedule table does).
        """
        with self._tx() as s:
            query = select(TrialRow).where(TrialRow.search_id == search.id,
                                           TrialRow.state == TrialState.COMPLETE.value,
                                           TrialRow.objective.is_not(None))
            if nfe is not None:
                query = query.where(TrialRow.nfe == nfe)
            if stage is not None:
                query = query.where(TrialRow.stage == Stage(stage).value)
            if fidelity is not None:
                query = query.where(TrialRow.fidelity == fidelity)
            order = (case((TrialRow.stage == Stage.HOLDOUT.value, 1), else_=0).desc(),
                     func.coalesce(TrialRow.fidelity, 0).desc(), TrialRow.objective, TrialRow.number)
            return [_trial(r) for r in s.scalars(query.order_by(*order).limit(k))]

    @_retrying
    def best_per_nfe(self, search: SearchRecord) -> dict[int, TrialRecord]:
        with self._tx() as s:
            rows = s.execute(select(BestScheduleRow.nfe, TrialRow).join(
                TrialRow, TrialRow.id == BestScheduleRow.trial_id).where(BestScheduleRow.search_id == search.id))
            return {nfe: _trial(t) for nfe, t in rows}

    # -- artifacts (fixed noise sets, reference-statistics metadata) ----------------------------

    @_retrying
    def put_artifact(self, search: SearchRecord, kind: str, data: bytes, meta: Mapping[str, Any]) -> None:
        """Store (or replace) the search's artifact of this kind."""
        with self._tx() as s:
            _put_artifact(s, search, kind, data, meta)

    @_retrying
    def get_artifact(self, search: SearchRecord, kind: str) -> tuple[bytes, dict[str, Any]] | None:
        with self._tx() as s:
            row = s.scalar(select(ArtifactRow).where(ArtifactRow.search_id == search.id, ArtifactRow.kind == kind))
            return None if row is None else (row.data, dict(row.meta))

    # -- predictor checkpoints ---------------------------------------------------------------

    @_retrying
    def save_predictor(self, search: SearchRecord, weights: bytes, meta: Mapping[str, Any]) -> PredictorCheckpoint:
        with self._tx() as s:
            row = PredictorCheckpointRow(search_id=search.id, weights=weights, meta=dict(meta))
            s.add(row)
            s.flush()
            return _checkpoint(row)

    @_retrying
    def latest_predictor(self, search: SearchRecord) -> PredictorCheckpoint | None:
        with self._tx() as s:
            row = s.scalar(select(PredictorCheckpointRow).where(PredictorCheckpointRow.search_id == search.id)
                           .order_by(PredictorCheckpointRow.id.desc()).limit(1))
            return None if row is None else _checkpoint(row)


def _landed(s: Session, search: SearchRecord, trials: Sequence[NewTrial]) -> list[TrialRecord] | None:
    """The search's last ``len(trials)`` trials if they are exactly this batch (an earlier attempt
    committed it before its connection broke), else None. A batch never legitimately repeats the
    one before it: the loop measures a schedule once per fidelity, noise and stage."""
    if not trials:
        return None
    rows = list(s.scalars(select(TrialRow).where(TrialRow.search_id == search.id)
                          .order_by(TrialRow.number.desc()).limit(len(trials))))[::-1]
    same = len(rows) == len(trials) and all(
        (r.schedule_hash, r.nfe, r.fidelity, r.stage, r.meta or {}) ==
        (t.schedule_hash, t.nfe, t.fidelity, Stage(t.stage).value, _json_safe(dict(t.meta)) or {})
        for r, t in zip(rows, trials))
    return [_trial(r) for r in rows] if same else None


def _put_artifact(s: Session, search: SearchRecord, kind: str, data: bytes, meta: Mapping[str, Any]) -> None:
    row = s.scalar(select(ArtifactRow).where(ArtifactRow.search_id == search.id, ArtifactRow.kind == kind))
    if row is None:
        s.add(ArtifactRow(search_id=search.id, kind=kind, data=data, meta=dict(meta)))
    else:
        row.data, row.meta = data, dict(meta)


def _prepare_schema(conn: Connection, *, create: bool, read_only: bool) -> None:
    """Create or upgrade the schema to the migrations' head; refuse foreign or newer databases untouched."""
    if conn.dialect.name == "postgresql":  # one migrator at a time
        conn.execute(text("SELECT pg_advisory_xact_lock(7420117)"))
    revision = migrate.current_revision(conn)
    head = migrate.head_revision()
    if revision is None:
        ours = [t for t in inspect(conn).get_table_names() if t.startswith("ss_")]
        if ours:
            raise StoreError(f"{conn.engine.url!r} has schedsearch tables but no schema version; it cannot be upgraded")
        if not create or read_only:
            raise StoreError(f"{conn.engine.url!r} is not a schedsearch database (no trial tables)")
        migrate.upgrade(conn)
    elif revision not in migrate.known_revisions():
        raise StoreError(
            f"database schema {revision!r} is newer than this schedsearch understands (up to {head!r}); "
            "upgrade schedsearch"
        )
    elif revision != head:
        if read_only:
            raise StoreError(f"database schema {revision!r} is older than {head!r}; upgrade it with "
                             "'schedsearch upgrade-db --db URL'")
        migrate.upgrade(conn)


def _finish(s: Session, row: TrialRow, state: TrialState, metrics: Mapping[str, Any] | None,
            objective: float | None, error: str | None, seconds: float | None) -> None:
    """Write a trial's result and keep the best schedule of its NFE up to date."""
    row.state, row.metrics, row.objective = state.value, _json_safe(dict(metrics or {})), objective
    row.error, row.seconds, row.finished_at = error, seconds, _now()
    if state is TrialState.COMPLETE and objective is not None:
        best = s.scalar(select(BestScheduleRow).where(
            BestScheduleRow.search_id == row.search_id, BestScheduleRow.nfe == row.nfe))
        if best is None:
            s.add(BestScheduleRow(search_id=row.search_id, nfe=row.nfe, trial_id=row.id, objective=objective))
        else:
            current = s.get(TrialRow, best.trial_id)
            if current is None or _evidence(row) > _evidence(current):
                best.trial_id, best.objective = row.id, objective
    s.flush()


def _evidence(row: TrialRow) -> tuple[int, int, float]:
    """How a result ranks for the best schedule: held-out noise first, then more samples, then lower objective."""
    return (int(row.stage == Stage.HOLDOUT.value), row.fidelity or 0, -float(row.objective))


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null: PostgreSQL's json rejects NaN/Infinity, and both dialects must agree."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _search(r: SearchRow) -> SearchRecord:
    return SearchRecord(r.id, r.name, dict(r.config), r.model_ref, r.objective, r.status, _utc(r.created_at),
                        _utc(r.updated_at))


def _trial(r: TrialRow) -> TrialRecord:
    return TrialRecord(r.id, r.search_id, r.number, TrialState(r.state), dict(r.schedule), r.schedule_hash, r.nfe,
                       r.fidelity, dict(r.metrics or {}), r.objective, r.predicted, r.worker, r.error,
                       _utc(r.created_at), _utc(r.started_at), _utc(r.finished_at), r.seconds,
                       Stage(r.stage or Stage.SEARCH.value), dict(r.meta or {}))


def _checkpoint(r: PredictorCheckpointRow) -> PredictorCheckpoint:
    return PredictorCheckpoint(r.id, r.search_id, r.weights, dict(r.meta), _utc(r.created_at))


__all__ = ["DEFAULT_DB", "StoreError", "TrialStore"]
