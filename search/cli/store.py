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
    if args.diffusers or args.sigmas:
        print(_interop(args, data))
        if out is None:
            return
    text = json.dumps(data, indent=2)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        print(f"wrote the best schedule of {args.name!r} (trial {data['provenance']['trial']}, NFE {data['nfe']}) "
              f"to {out}")


def _interop(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """The exported schedule as diffusers settings or k-diffusion sigmas (needs the model's noise schedule)."""
    from schedsearch.solvers import Schedule, load_model
    from schedsearch.solvers.exports import diffusers_export, sigmas

    schedule = Schedule.from_dict(data)
    model = load_model(args.model or data["provenance"]["model"], device="cpu")
    if args.sigmas:
        return json.dumps(sigmas(schedule, model.noise_schedule))
    export = diffusers_export(schedule, model.noise_schedule)
    return json.dumps(export.to_dict(), indent=2) if args.format == "json" else export.render()


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
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--diffusers", action="store_true",
                      help="print the timesteps= list and the diffusers scheduler settings that reproduce the "
                           "schedule (or why none does)")
    kind.add_argument("--sigmas", action="store_true",
                      help="print the k-diffusion / ComfyUI sigma list (descending, ending in 0) as JSON")
    p.add_argument("--format", choices=["text", "json"], default="text", help="--diffusers as text or JSON")
    p.add_argument("--model", help="the model whose noise schedule --diffusers/--sigmas use (default: the search's)")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("upgrade-db", help="upgrade an existing trial database to this schedsearch's schema",
                       description="Migrate an existing trial database to the latest schema (in one transaction; "
                                   "an up-to-date database is left as it is, a newer one is refused untouched).")
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_upgrade_db)
