"""What every command shares: the one-line user error, the parser, argument types."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
DB_HELP = "database URL, e.g. sqlite:///runs.db or postgresql+psycopg://user@host/db (default: $SCHEDSEARCH_DB, " \
          "else sqlite:///schedsearch.db)"


class UserError(Exception):
    """A problem with the user's input; printed as one line."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, False, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or default == "" or default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer argument type that refuses values below ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def grid_arg(text: str) -> str | list[float]:
    """A grid name, or comma-separated model times."""
    items = [v.strip() for v in text.split(",")]
    if len(items) == 1 and not _is_number(items[0]):
        if not items[0]:
            raise argparse.ArgumentTypeError("expected a grid name or comma-separated times, got ''")
        return items[0]
    if not all(v and _is_number(v) for v in items):
        raise argparse.ArgumentTypeError(f"not a grid name or a list of times: {text!r}")
    return [float(v) for v in items]


def grids_arg(text: str) -> list[str | list[float]]:
    """Comma-separated grid names, or one comma-separated list of model times."""
    items = csv_arg(text)
    numeric = [_is_number(v) for v in items]
    if all(numeric):
        return [[float(v) for v in items]]
    if any(numeric):
        raise argparse.ArgumentTypeError(f"give grid names or one list of times, not both: {text!r}")
    return list(items)


def csv_arg(text: str) -> list[str]:
    items = [v.strip() for v in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty item in {text!r}")
    return items


def positive_ints_arg(text: str) -> list[int]:
    """Comma-separated integers ≥ 1 (e.g. an NFE list)."""
    parse = at_least(1)
    return [parse(v) for v in csv_arg(text)]


def labels_arg(text: str) -> list[int]:
    """Comma-separated class labels (integers ≥ 0)."""
    try:
        values = [int(v) for v in csv_arg(text)]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated class labels (integers), got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"class labels are at least 0, got {text!r}")
    return values


def output_path(option: str, path: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Check before any work that an output file can be written: its folder exists, its suffix is known."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise UserError(f"{option} {path}: is a directory; name a file")
    if not out.parent.is_dir():
        raise UserError(f"{option} {path}: folder {out.parent} does not exist")
    if suffixes and out.suffix.lower().lstrip(".") not in suffixes:
        raise UserError(f"{option} {path}: unknown file type {out.suffix or '(none)'!r} (use {', '.join(suffixes)})")
    return out


def check_guidance(option: str, scale: float | None, model: Any) -> None:
    """Classifier-free guidance needs a class-conditional model with a null class."""
    if scale is not None and scale != 1.0 and (model.uncond is None or not model.num_classes):
        raise UserError(f"{option}: {model.name} has no unconditional input (null class) for classifier-free guidance")


def read_text(path: str, where: str, not_found: str | None = None) -> str:
    """A text file's content; a missing or unreadable file is one :class:`UserError` line naming ``where``."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise UserError(not_found or f"{where}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None


def read_schedule(path: str, option: str | None = None) -> Any:
    """Read a schedule JSON file; errors name the file (and the option it came from)."""
    from schedsearch.solvers import Schedule, ScheduleError

    where = f"{option} {path}" if option else f"schedule file {path}"
    text = read_text(path, where, not_found=None if option else f"schedule file not found: {path}")
    try:
        return Schedule.from_json(text)
    except ScheduleError as exc:
        if option is None:
            raise
        raise UserError(f"{where}: {exc}") from None


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    """--prompt / --prompts / --negative-prompt (text-to-image models)."""
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="prompt of a text-to-image model (repeat for several; sample i gets prompt i mod P; "
                        "default: the empty prompt)")
    p.add_argument("--prompts", metavar="FILE", help="a file of prompts, one per line")
    p.add_argument("--negative-prompt", metavar="TEXT",
                   help="the prompt classifier-free guidance steers away from (default: the empty prompt)")


def read_prompts(args: argparse.Namespace) -> list[str] | None:
    """The prompts given by --prompt or --prompts (None: neither)."""
    if args.prompt and args.prompts:
        raise UserError("--prompt and --prompts: give one of them")
    if args.prompts:
        from schedsearch.solvers.pipelines import prompt_lines

        prompts = prompt_lines(read_text(args.prompts, f"--prompts {args.prompts}"))
        if not prompts:
            raise UserError(f"--prompts {args.prompts}: holds no prompts (one per line)")
        return prompts
    return list(args.prompt) if args.prompt else None


def prompted(model: Any, args: argparse.Namespace) -> Any:
    """``model`` conditioned on the command line's prompts (unchanged without any)."""
    prompts = read_prompts(args)
    if prompts is None and args.negative_prompt is None:
        return model
    if model.prompt_encoder is None:
        option = "--negative-prompt" if prompts is None else ("--prompts" if args.prompts else "--prompt")
        raise UserError(f"{option}: {model.name} is not a text-to-image model")
    from schedsearch.solvers.pipelines import with_prompts

    return with_prompts(model, prompts or [""], args.negative_prompt)
