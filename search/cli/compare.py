"""``schedsearch compare``: every baseline (solver × grid) and given schedules, per NFE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import UserError, csv_arg, ints_arg, read_schedule


def _cmd_compare(args: argparse.Namespace) -> None:
    from schedsearch.solvers import BASELINES, load_model

    from ..compare import default_evaluator, format_table, plot, rows_to_json, run_compare

    if args.solvers is None:
        args.solvers = list(BASELINES)
    unknown = [s for s in args.solvers if s not in BASELINES]
    if unknown:
        raise UserError(f"--solvers: unknown {unknown[0]!r} (known: {', '.join(BASELINES)})")
    if any(n < 1 for n in args.nfe):
        raise UserError("--nfe: every NFE must be at least 1")
    schedules = [(Path(p).stem, read_schedule(p)) for p in args.schedules]
    model = load_model(args.model, device=args.device)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    reference = None
    if args.reference:
        from ..metrics.reference_data import load_reference_images

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


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="evaluate every baseline (solver × grid) and given schedules per NFE")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("--nfe", type=ints_arg, default=[3, 4, 5, 6, 8, 10], help="comma-separated NFE list")
    p.add_argument("--solvers", type=csv_arg, default=None, help="comma-separated baseline names (default: all)")
    p.add_argument("--grids", type=csv_arg, default=["uniform_t", "uniform_lambda", "quadratic", "karras"],
                   help="comma-separated grid names")
    p.add_argument("--schedules", type=csv_arg, default=[], help="comma-separated schedule JSON files to include")
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
