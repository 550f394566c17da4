"""``schedsearch searches | trials | export``: read the trial database."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import DB_HELP


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

    store = open_read_only(database_url(args.db))
    try:
        data = export_best(store, store.get_search(args.name), args.nfe)
    finally:
        store.close()
    text = json.dumps(data, indent=2)
    if args.output in (None, "-"):
        print(text)
    else:
        Path(args.output).write_text(text + "\n")
        print(f"wrote the best schedule of {args.name!r} (trial {data['provenance']['trial']}, NFE {data['nfe']}) "
              f"to {args.output}")


def register(sub: Any) -> None:
    p = sub.add_parser("searches", help="list the searches in the trial database")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(run=_cmd_searches)

    p = sub.add_parser("trials", help="list the trials of a search")
    p.add_argument("name", help="search name")
    p.add_argument("--top", type=int, help="the K best complete trials")
    p.add_argument("--state", help="queued, running, complete, failed or interrupted")
    p.add_argument("--nfe", type=int, help="only trials with this NFE")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_trials)

    p = sub.add_parser("export", help="write the best schedule of a search as schedule JSON")
    p.add_argument("name", help="search name")
    p.add_argument("-o", "--output", help="output JSON file (default: stdout)")
    p.add_argument("--nfe", type=int, help="the best at this NFE (default: best overall)")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_export)
