"""The ``schedsearch`` command line.

Every command turns bad input into one line on stderr naming the problem and a
non-zero exit status (set ``SCHEDSEARCH_DEBUG=1`` for the traceback). One module per
command group registers its sub-commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import compare, predictor, refine, sampling, search, store
from .common import EXIT_USAGE, Parser, UserError

__all__ = ["EXIT_USAGE", "UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="schedsearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in (search, sampling, refine, compare, store, predictor):
        group.register(sub)
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(f"schedsearch: error: give a command: {', '.join(_commands(parser))} "
              "(schedsearch COMMAND --help for its options)", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except Exception as exc:
        if os.environ.get("SCHEDSEARCH_DEBUG"):
            raise
        print(f"schedsearch: error: {_describe(exc)}", file=sys.stderr)
        return 1
    return 0


# The errors that carry a message meant for the user, by module (an error of a module that was never
# imported cannot have been raised, so describing one never imports torch just to compare classes).
_USER_ERRORS = (
    ("schedsearch.solvers.errors", "SolverError"), ("schedsearch.storage.store", "StoreError"),
    ("schedsearch.search.config", "ConfigError"), ("schedsearch.search.engines.base", "EngineLost"),
    ("schedsearch.search.loop", "SearchError"), ("schedsearch.search.metrics.fidelity", "ExtractorError"),
    ("schedsearch.search.metrics.reference_data", "ReferenceDataError"), ("schedsearch.search.space", "SpaceError"),
    ("schedsearch.search.strategies.base", "StateError"), ("schedsearch.search.metrics.latent", "ClipModelError"),
)


def _describe(exc: Exception) -> str:
    known: tuple[type, ...] = (UserError,) + tuple(
        getattr(sys.modules[module], name) for module, name in _USER_ERRORS if module in sys.modules)
    if isinstance(exc, known):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


if __name__ == "__main__":
    raise SystemExit(main())
