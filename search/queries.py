"""Read-only queries of the trial store for the command line (tables, JSON, CSV, export)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from schedsearch.storage import DEFAULT_DB, SearchRecord, StoreError, TrialRecord, TrialState, TrialStore

DB_ENV = "SCHEDSEARCH_DB"


def database_url(cli_value: str | None) -> str:
    """--db, else $SCHEDSEARCH_DB, else the SQLite file schedsearch.db in the working directory.

    A bare file path is refused with the SQLite URL that names it (``sqlite:///`` + the path).
    """
    url = cli_value or os.environ.get(DB_ENV) or DEFAULT_DB
    if "://" not in url:
        source = "--db" if cli_value else DB_ENV
        raise StoreError(f"{source}: {url!r} is not a database URL; for a SQLite file write sqlite:///{url}")
    return url


def open_read_only(url: str) -> TrialStore:
    return TrialStore.open(url, create=False, read_only=True)


def select_trials(store: TrialStore, search: SearchRecord, top: int | None, state: str | None,
                  nfe: int | None) -> list[TrialRecord]:
    if state is not None and state not in {s.value for s in TrialState}:
        raise StoreError(f"--state: unknown {state!r} (known: {', '.join(s.value for s in TrialState)})")
    if top is not None:
        if top < 1:
            raise StoreError(f"--top: {top} trials asked; give at least 1")
        if state not in (None, TrialState.COMPLETE.value):
            raise StoreError("--top ranks complete trials; it cannot be combined with --state " + state)
        return store.best(search, k=top, nfe=nfe)
    return store.trials(search, state=None if state is None else TrialState(state), nfe=nfe)


def render_trials(trials: Sequence[TrialRecord], fmt: str) -> str:
    rows = [t.to_dict() for t in trials]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    metric_names = sorted({k for r in rows for k in r["metrics"]})
    header = ["number", "state", "nfe", "objective", *metric_names, "worker", "seconds", "error"]
    table = [[r["number"], r["state"], r["nfe"], r["objective"], *[r["metrics"].get(m) for m in metric_names],
              r["worker"], r["seconds"], r["error"]] for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*header, "schedule"])
        for r, line in zip(rows, table):
            writer.writerow([*line, json.dumps(r["schedule"])])
        return out.getvalue().rstrip("\n")
    return _table(header, table)


def render_searches(searches: Sequence[SearchRecord], counts: Sequence[dict[str, int]], fmt: str) -> str:
    rows = [{"name": s.name, "status": s.status, "model": s.model_ref, "objective": s.objective,
             "trials": sum(c.values()), "complete": c.get("complete", 0), "created": s.created_at.isoformat(
                 timespec="seconds")} for s, c in zip(searches, counts)]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    header = list(rows[0]) if rows else ["name", "status", "model", "objective", "trials", "complete", "created"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    return _table(header, [[r[h] for h in header] for r in rows])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.5g}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def measured_schedules(store: TrialStore, search: SearchRecord) -> tuple[list[Any], list[float]]:
    """The search's schedules measured on the search noise at its first fidelity (baselines included), with
    their finite objectives: what a predictor of this search learns from."""
    from schedsearch.solvers import Schedule
    from schedsearch.storage import Stage

    from .config import SearchConfig

    level = SearchConfig.model_validate(search.config).fidelity.samples[0]
    trials = [t for t in store.trials(search, state=TrialState.COMPLETE)
              if t.stage in (Stage.BASELINE, Stage.SEARCH) and t.fidelity == level and t.objective is not None
              and math.isfinite(t.objective)]
    return [Schedule.from_dict(t.schedule) for t in trials], [float(t.objective) for t in trials]


def export_best(store: TrialStore, search: SearchRecord, nfe: int | None) -> dict[str, Any]:
    """The search's best schedule at ``nfe`` (the held-out winner once validated; without ``nfe`` the best
    over all NFE) as schedule JSON with provenance."""
    from schedsearch.solvers import Schedule

    from .fidelity import evidence

    best = store.best_per_nfe(search)
    if nfe is not None:
        trial = best.get(nfe)
    else:  # the best over every NFE, ranked as each NFE's best is
        trial = min(best.values(), key=evidence, default=None)
    if trial is None:
        where = f" at NFE {nfe}" if nfe is not None else ""
        raise StoreError(f"search {search.name!r} has no complete trial{where} to export")
    data = dict(trial.schedule)
    data["provenance"] = {**dict(data.get("provenance", {})), "model": search.model_ref, "search": search.name,
                          "trial": trial.number, "objective": search.objective, "stage": trial.stage.value,
                          "samples": trial.fidelity, "metrics": dict(trial.metrics)}
    return Schedule.from_dict(data).to_dict()
