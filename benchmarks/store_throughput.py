"""Trial-store throughput: recording trials as the search loop does, and top-k queries at scale.

Inserts 100,000 trials into one search (``record_trials`` in batches, one transaction each,
as the search loop writes them), fills the table to 1,000,000 rows with other searches'
trials, then times ``best(search, k=20)``. SQLite (a temporary file) and PostgreSQL
(``--postgres URL``, default ``$SCHEDSEARCH_TEST_POSTGRES_URL``; see ``.ci/postgres``).

    .venv/bin/python benchmarks/store_throughput.py [--trials 100000] [--rows 1000000] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from schedsearch.solvers import baseline, load_model
from schedsearch.storage import NewTrial, TrialStore
from schedsearch.storage.models import TrialRow


def fresh_postgres(server: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def run(url: str, trials: int, rows: int, batch: int) -> tuple[float, float, float]:
    schedule = baseline("unipc_bh2", 8, load_model("builtin:gmm-ring"))
    body, digest = schedule.to_dict(), schedule.canonical_hash()
    rng = random.Random(0)
    store = TrialStore.open(url)
    target = store.create_search("target", {}, "builtin:gmm-ring", "fid")
    start = time.perf_counter()
    for first in range(0, trials, batch):
        store.record_trials(target, [
            (NewTrial(body, digest, 8), {"fid": v, "kid": v / 10}, v, None)
            for v in (rng.random() * 100 for _ in range(min(batch, trials - first)))
        ])
    per_trial_ms = (time.perf_counter() - start) / trials * 1e3
    # filler: other searches' trials, written in bulk (their speed is not what is measured)
    filler = rows - trials
    searches = [store.create_search(f"other{i}", {}, "m", "fid") for i in range(9)]
    stamp = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        for lo in range(0, filler, 20000):
            conn.execute(sa.insert(TrialRow), [
                {"search_id": searches[(lo + i) % 9].id, "number": lo + i, "state": "complete", "schedule": body,
                 "schedule_hash": digest, "nfe": 8, "metrics": {"fid": 1.0}, "objective": rng.random() * 100,
                 "created_at": stamp}
                for i in range(min(20000, filler - lo))
            ])
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE ss_trials"))
        else:
            conn.execute(sa.text("ANALYZE"))
        total = conn.execute(sa.text("SELECT count(*) FROM ss_trials")).scalar()
    assert total == rows, total
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        best = store.best(target, k=20)
        times.append(time.perf_counter() - t0)
    assert len(best) == 20 and best[0].objective <= best[-1].objective
    store.close()
    return per_trial_ms, statistics.median(times) * 1e3, max(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--postgres", default=os.environ.get("SCHEDSEARCH_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("SQLite (WAL)", *run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.trials, args.rows,
                                             args.batch)))
    if args.postgres:
        results.append(("PostgreSQL", *run(fresh_postgres(args.postgres), args.trials, args.rows, args.batch)))
    else:
        print("(no PostgreSQL URL given: pass --postgres or set SCHEDSEARCH_TEST_POSTGRES_URL)")
    print(f"{args.trials} trials recorded in batches of {args.batch}; top-20 query among {args.rows} rows")
    print(f"{'backend':<14} {'ms / recorded trial':>20} {'goal':>6} {'top-20 median ms':>17} {'max ms':>8} {'goal':>6}")
    for name, per_trial, q_med, q_max in results:
        print(f"{name:<14} {per_trial:>20.3f} {'<2':>6} {q_med:>17.2f} {q_max:>8.2f} {'<50':>6}")


if __name__ == "__main__":
    main()
