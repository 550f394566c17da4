"""What every command shares: the one-line user error, the parser, argument types."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
DB_HELP = "database URL (default: $SCHEDSEARCH_DB, else sqlite:///schedsearch.db)"


class UserError(Exception):
    """A problem with the user's input; printed as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def grid_arg(text: str) -> str | list[float]:
    """A grid name, or comma-separated model times."""
    if "," not in text and not text.replace(".", "", 1).lstrip("-").isdigit():
        return text
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a grid name or a list of times: {text!r}") from None


def csv_arg(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def ints_arg(text: str) -> list[int]:
    try:
        return [int(v) for v in csv_arg(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def read_schedule(path: str) -> Any:
    from schedsearch.solvers import Schedule

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"schedule file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read schedule file {path}: {exc.strerror}") from None
    return Schedule.from_json(text)
