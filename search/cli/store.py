"""``schedsearch searches | trials | export`` read the trial database; ``upgrade-db`` migrates it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import DB_HELP, at_least, output_path


def _cmd_searches(args: argparse.Namespace) -> None:
    from ..queries import database_url, open_read_only, render_searches

    store = open_read_only(database_url(args.db))
    try:
        searches = store.list_searches()
        counts = [{state.value: n for state, n in store.count_trials(r).items()} for r in searches]
        print(render_searches(searches, counts, args.format))
    finally:
        store.close()


def _cmd_trials(args: argparse.Namespace) -> None:
    from ..queries import database_url, open_read_only, render_trials, select_trials

    store = open_read_only(database_url(args.db))
    try:
        search = store.get_search(args.name)
        print(render_trials(select_trials(store, search, args.top, args.state, args.nfe), args.format))
    finally:
        store.close()


def _cmd_export(args: argparse.Namespace) -> None:
    from ..queries import database_url, export_best, open_read_only

    out = None if args.output in (None, "-") else output_path("-o/--output", args.output)
    store = open_read_only(database_url(args.db))
    try:
        data = export_best(store, store.get_search(args.name), args.nfe)
    finally:
        store.close()
    text = json.dumps(data, indent=2)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        print(f"wrote the best schedule of {args.name!r} (trial {data['provenance']['trial']}, NFE {data['nfe']}) "
              f"to {out}")


def _cmd_upgrade_db(args: argparse.Namespace) -> None:
    from schedsearch.storage import TrialStore, migrate

    from ..queries import database_url

    url = database_url(args.db)
    store = TrialStore.open(url, create=False)  # migrates an older schema to the head, refuses a newer one
    try:
        with store.engine.connect() as conn:
            revision = migrate.current_revision(conn)
    finally:
        store.close()
    print(f"{store.engine.url!r}: schema {revision} (the latest this schedsearch knows)")


def register(sub: Any) -> None:
    p = sub.add_parser("searches", help="list the searches in the trial database")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(run=_cmd_searches)

    p = sub.add_parser("trials", help="list the trials of a search")
    p.add_argument("name", help="search name")
    p.add_argument("--top", type=at_least(1), help="the K best complete trials")
    p.add_argument("--state", help="queued, running, complete, failed or interrupted")
    p.add_argument("--nfe", type=at_least(1), help="only trials with this NFE")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_trials)

    p = sub.add_parser("export", help="write the best schedule of a search as schedule JSON")
    p.add_argument("name", help="search name")
    p.add_argument("-o", "--output", help="output JSON file (default: stdout)")
    p.add_argument("--nfe", type=at_least(1), help="the best at this NFE (default: best overall)")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("upgrade-db", help="upgrade an existing trial database to this schedsearch's schema",
                       description="Migrate an existing trial database to the latest schema (in one transaction; "
                                   "an up-to-date database is left as it is, a newer one is refused untouched).")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_upgrade_db)
