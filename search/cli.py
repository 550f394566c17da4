"""The ``schedsearch`` command line.

Every command turns bad input into one line on stderr naming the problem and a
non-zero exit status (set ``SCHEDSEARCH_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _grid(text: str) -> str | list[float]:
    """A grid name, or comma-separated model times."""
    if "," not in text and not text.replace(".", "", 1).lstrip("-").isdigit():
        return text
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a grid name or a list of times: {text!r}") from None


def _cmd_baseline(args: argparse.Namespace) -> None:
    from solvers import baseline, load_model

    model = load_model(args.model, device="cpu")
    schedule = baseline(args.name, args.nfe, model, grid=args.grid)
    text = schedule.to_json()
    if args.output in (None, "-"):
        print(text)
    else:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.name} (NFE {schedule.nfe}, {len(schedule.steps)} steps) to {args.output}")


def _read_schedule(path: str) -> Any:
    from solvers import Schedule

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"schedule file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read schedule file {path}: {exc.strerror}") from None
    return Schedule.from_json(text)


def _labels(args: argparse.Namespace, model: Any, n: int) -> Any:
    import torch

    num = model.info.get("num_class_embeds")
    if args.labels is not None:
        values = [int(v) for v in args.labels.split(",")]
        labels = torch.tensor(values * (n // len(values) + 1))[:n]
    elif model.num_classes:
        labels = torch.arange(n) % model.num_classes
    else:
        return None
    if num and (labels.min() < 0 or labels.max() >= num):
        raise UserError(f"--labels: class labels must lie in 0..{num - 1}")
    return labels


def _initial_noise(args: argparse.Namespace, model: Any) -> Any:
    import torch

    if args.noise is not None:
        try:
            noise = torch.load(args.noise, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"noise file not found: {args.noise}") from None
        except Exception as exc:
            raise UserError(f"cannot read noise file {args.noise}: {type(exc).__name__}") from None
        if not isinstance(noise, torch.Tensor):
            raise UserError(f"noise file {args.noise} does not hold a tensor")
        if tuple(noise.shape[1:]) != tuple(model.sample_shape):
            raise UserError(f"noise: shape {tuple(noise.shape)} does not match the model's (N, {model.sample_shape})")
        return noise
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randn((args.num, *model.sample_shape), generator=generator, dtype=model.state_dtype)


def _cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from solvers import load_model, sample

    schedule = _read_schedule(args.schedule)
    model = load_model(args.model, device=args.device)
    noise = _initial_noise(args, model)
    labels = _labels(args, model, noise.shape[0])
    x = sample(model, schedule, noise, cond=labels, guidance_scale=args.guidance_scale)
    if not torch.isfinite(x).all():
        raise UserError("sampling produced NaN or inf values (the schedule diverges on this model)")
    if args.out:
        torch.save(x.cpu(), args.out)
    if args.png:
        if x.dim() != 4:
            raise UserError("--png needs an image model (samples of shape C×H×W)")
        from torchvision.utils import save_image

        save_image((x.float().cpu() + 1) / 2, args.png, nrow=int(max(1, round(x.shape[0] ** 0.5))))
    where = ", ".join(p for p in (args.out, args.png) if p) or "nowhere (give --out or --png)"
    print(f"sampled {x.shape[0]} with NFE {schedule.nfe} on {model.name}; wrote {where}")


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cmd_compare(args: argparse.Namespace) -> None:
    from solvers import BASELINES, load_model

    from .compare import default_evaluator, format_table, plot, rows_to_json, run_compare

    unknown = [s for s in args.solvers if s not in BASELINES]
    if unknown:
        raise UserError(f"--solvers: unknown {unknown[0]!r} (known: {', '.join(BASELINES)})")
    if any(n < 1 for n in args.nfe):
        raise UserError("--nfe: every NFE must be at least 1")
    schedules = [(Path(p).stem, _read_schedule(p)) for p in args.schedules]
    model = load_model(args.model, device=args.device)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    reference = None
    if args.reference:
        from .metrics.reference_data import load_reference_images

        reference = load_reference_images(args.reference, tuple(model.sample_shape))
    elif args.extractor or args.extractor_weights:
        raise UserError("--extractor / --extractor-weights: give the reference images too (--reference PATH)")
    weights = Path(args.extractor_weights).expanduser() if args.extractor_weights else None
    evaluator = default_evaluator(model, args.samples, args.seed, args.guidance_scale, reference_images=reference,
                                  cache_root=cache, extractor=args.extractor, extractor_weights=weights)
    rows = run_compare(model, evaluator, args.nfe, args.solvers, args.grids, schedules, progress=not args.quiet)
    guidance = "no guidance" if args.guidance_scale is None else f"guidance scale {args.guidance_scale:g}"
    print(f"{model.name}: {args.samples} samples, seed {args.seed}, {guidance}")
    format_table(rows, evaluator.objective, sys.stdout)
    if args.plot:
        plot(rows, evaluator.objective, Path(args.plot), f"{model.name} — {evaluator.objective} vs NFE")
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(rows_to_json(rows) + "\n")
        print(f"results: {args.json}")


def _cmd_searches(args: argparse.Namespace) -> None:
    from .queries import database_url, open_read_only, render_searches

    store = open_read_only(database_url(args.db))
    try:
        searches = store.list_searches()
        counts = [{state.value: n for state, n in store.count_trials(r).items()} for r in searches]
        print(render_searches(searches, counts, args.format))
    finally:
        store.close()


def _cmd_trials(args: argparse.Namespace) -> None:
    from .queries import database_url, open_read_only, render_trials, select_trials

    store = open_read_only(database_url(args.db))
    try:
        search = store.get_search(args.name)
        print(render_trials(select_trials(store, search, args.top, args.state, args.nfe), args.format))
    finally:
        store.close()


def _cmd_export(args: argparse.Namespace) -> None:
    from .queries import database_url, export_best, open_read_only

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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="schedsearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("baseline", help="write a baseline solver's schedule as JSON")
    p.add_argument("name", help="ddim, dpm_solver_1..3, dpmpp_2m, dpmpp_3m, unipc_bh1/2, unip_bh1/2, ipndm")
    p.add_argument("--nfe", type=int, required=True, help="model evaluations")
    p.add_argument("--grid", type=_grid, default="uniform_lambda",
                   help="uniform_t, uniform_lambda, quadratic, karras, linspace, leading, trailing, ays:<name>, "
                        "or comma-separated model times")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("-o", "--output", help="output JSON file (default: stdout)")
    p.set_defaults(run=_cmd_baseline)

    p = sub.add_parser("sample", help="run a schedule JSON on a model")
    p.add_argument("schedule", help="schedule JSON file")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("--noise", help="initial noise tensor (.pt, shape N×sample shape)")
    p.add_argument("--seed", type=int, default=0, help="seed for the initial noise when --noise is not given")
    p.add_argument("-n", "--num", type=int, default=64, help="number of samples when --noise is not given")
    p.add_argument("--labels", help="class label(s), comma-separated, for class-conditional models")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: the schedule's)")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--out", help="write the samples tensor here (.pt)")
    p.add_argument("--png", help="write an image grid here (image models)")
    p.set_defaults(run=_cmd_sample)

    p = sub.add_parser("compare", help="evaluate every baseline (solver × grid) and given schedules per NFE")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("--nfe", type=_ints, default=[3, 4, 5, 6, 8, 10], help="comma-separated NFE list")
    p.add_argument("--solvers", type=_csv, default=None, help="comma-separated baseline names (default: all)")
    p.add_argument("--grids", type=_csv, default=["uniform_t", "uniform_lambda", "quadratic", "karras"],
                   help="comma-separated grid names")
    p.add_argument("--schedules", type=_csv, default=[], help="comma-separated schedule JSON files to include")
    p.add_argument("-n", "--samples", type=int, default=1000, help="samples per evaluation (fixed noise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed noise set")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--plot", default="compare.png", help="quality-vs-NFE plot (PNG); '' for none")
    p.add_argument("--json", help="write all results as JSON here")
    p.add_argument("--reference", help="reference images for FID/KID/precision-recall: a folder of images or a "
                   ".pt/.npy/.npz tensor (uint8, or floats in [-1, 1]); default for digits: its training split")
    p.add_argument("--extractor", help="torch-fidelity feature extractor (default: schedsearch-digits for the "
                   "digits model, inception-v3-compat otherwise)")
    p.add_argument("--extractor-weights", help="local weights file for the extractor (no download)")
    p.add_argument("--cache-dir", default="~/.cache/schedsearch", help="reference-statistics cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_compare)

    db_help = "database URL (default: $SCHEDSEARCH_DB, else sqlite:///schedsearch.db)"
    p = sub.add_parser("searches", help="list the searches in the trial database")
    p.add_argument("--db", help=db_help)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(run=_cmd_searches)

    p = sub.add_parser("trials", help="list the trials of a search")
    p.add_argument("name", help="search name")
    p.add_argument("--top", type=int, help="the K best complete trials")
    p.add_argument("--state", help="queued, running, complete, failed or interrupted")
    p.add_argument("--nfe", type=int, help="only trials with this NFE")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--db", help=db_help)
    p.set_defaults(run=_cmd_trials)

    p = sub.add_parser("export", help="write the best schedule of a search as schedule JSON")
    p.add_argument("name", help="search name")
    p.add_argument("-o", "--output", help="output JSON file (default: stdout)")
    p.add_argument("--nfe", type=int, help="the best at this NFE (default: best overall)")
    p.add_argument("--db", help=db_help)
    p.set_defaults(run=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "compare" and args.solvers is None:
        from solvers import BASELINES

        args.solvers = list(BASELINES)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except Exception as exc:
        if os.environ.get("SCHEDSEARCH_DEBUG"):
            raise
        print(f"schedsearch: error: {_describe(exc)}", file=sys.stderr)
        return 1
    return 0


def _describe(exc: Exception) -> str:
    from solvers import SolverError
    from storage import StoreError

    from .metrics.fidelity import ExtractorError
    from .metrics.reference_data import ReferenceDataError

    if isinstance(exc, UserError | SolverError | StoreError | ExtractorError | ReferenceDataError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


if __name__ == "__main__":
    raise SystemExit(main())
