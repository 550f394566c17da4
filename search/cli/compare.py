"""``schedsearch compare``: every baseline (solver × grid) and given schedules, per NFE.

Every option is checked (and the model loaded) before the first evaluation; an evaluation that
fails at run time is a ``failed`` cell with its reason below the table, and the command fails
when every evaluation did.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import (
    UserError,
    at_least,
    check_guidance,
    csv_arg,
    finite_float,
    grids_arg,
    add_prompt_options,
    output_path,
    positive_ints_arg,
    prompted,
    read_schedule,
)

DEFAULT_GRIDS = "uniform_t,uniform_lambda,quadratic,karras"
PLOT_SUFFIXES = ("png", "pdf", "svg")


def _check_grids(grids: Sequence[str | list[float]], nfes: Sequence[int], model: Any) -> None:
    from schedsearch.solvers import ScheduleError, model_times

    for grid in grids:
        for nfe in nfes:
            try:
                model_times(grid, nfe, model.noise_schedule)
            except ScheduleError as exc:
                raise UserError(f"--grids: {str(exc).removeprefix('grid: ')}") from None


def _check_schedules(schedules: Sequence[tuple[str, Any]], paths: Sequence[str], model: Any) -> None:
    from schedsearch.solvers import ScheduleError

    for (_, schedule), path in zip(schedules, paths):
        try:
            schedule.check_for(model.noise_schedule)
        except ScheduleError as exc:
            raise UserError(f"--schedules {path}: {exc}") from None


def _metrics(requested: list[str] | None, evaluator: Any, model_name: str) -> list[str]:
    available = list(evaluator.metric_names)
    if requested is None:
        return [evaluator.objective]
    if requested == ["all"]:
        return available
    unknown = [m for m in requested if m not in available]
    if unknown:
        raise UserError(f"--metrics: {unknown[0]!r} is not measured on {model_name} (available: {', '.join(available)})")
    return list(dict.fromkeys(requested))


def _plot_path(text: str | None) -> Path | None:
    if not text:  # not given, or '' for none
        return None
    if not Path(text).suffix:
        text += ".png"
    return output_path("--plot", text, PLOT_SUFFIXES)


def _cmd_compare(args: argparse.Namespace) -> None:
    from schedsearch.solvers import BASELINES, load_model

    from ..compare import default_evaluator, format_failures, format_table, plot, rows_to_json, run_compare

    solvers = list(BASELINES) if args.solvers is None else args.solvers
    unknown = [s for s in solvers if s not in BASELINES]
    if unknown:
        raise UserError(f"--solvers: unknown {unknown[0]!r} (known: {', '.join(BASELINES)})")
    if args.metrics is not None and "all" in args.metrics and args.metrics != ["all"]:
        raise UserError("--metrics: 'all' stands alone")
    plot_path = _plot_path(args.plot)
    json_path = output_path("--json", args.json) if args.json else None
    if args.extractor or args.extractor_weights:
        if not args.reference:
            raise UserError("--extractor / --extractor-weights: give the reference images too (--reference PATH)")
    schedules = [(Path(p).stem, read_schedule(p, "--schedules")) for p in args.schedules]
    model = prompted(load_model(args.model, device=args.device), args)
    _check_schedules(schedules, args.schedules, model)
    _check_grids(args.grids, args.nfe, model)
    check_guidance("--guidance-scale", args.guidance_scale, model)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    reference = None
    if args.reference:
        from ..metrics.reference_data import load_reference_images

        reference = load_reference_images(args.reference, model.image_shape)
    weights = Path(args.extractor_weights).expanduser() if args.extractor_weights else None
    clip = Path(args.clip_model).expanduser() if args.clip_model else None
    evaluator = default_evaluator(model, args.samples, args.seed, args.guidance_scale, reference_images=reference,
                                  cache_root=cache, extractor=args.extractor, extractor_weights=weights,
                                  clip_model=clip)
    metrics = _metrics(args.metrics, evaluator, model.name)

    rows = run_compare(model, evaluator, args.nfe, solvers, args.grids, schedules, progress=not args.quiet)
    guidance = "no guidance" if args.guidance_scale is None else f"guidance scale {args.guidance_scale:g}"
    print(f"{model.name}: {args.samples} samples, seed {args.seed}, {guidance}")
    for i, metric in enumerate(metrics):
        if i:
            print()
        format_table(rows, metric, sys.stdout)
    format_failures(rows, sys.stdout)
    if all(r.result.failed for r in rows):
        raise UserError(f"every evaluation failed ({len(rows)}; reasons above); nothing written")
    if plot_path is not None:
        plot(rows, evaluator.objective, plot_path, f"{model.name} — {evaluator.objective} vs NFE")
        print(f"plot: {plot_path}")
    if json_path is not None:
        json_path.write_text(rows_to_json(rows) + "\n")
        print(f"results: {json_path}")


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="evaluate every baseline (solver × grid) and given schedules per NFE",
                       description="Evaluate every baseline (solver × grid) and given schedules per NFE on one fixed "
                                   "noise set; print a table per metric (* = best per NFE).")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("--nfe", type=positive_ints_arg, default="3,4,5,6,8,10", help="comma-separated NFE list")
    p.add_argument("--solvers", type=csv_arg, default=None, help="comma-separated baseline names (default: all)")
    p.add_argument("--grids", type=grids_arg, default=DEFAULT_GRIDS,
                   help="comma-separated grid names (uniform_t, uniform_lambda, quadratic, karras, linspace, "
                        "leading, trailing, ays:<name>), or one comma-separated list of model times per NFE")
    p.add_argument("--schedules", type=csv_arg, default=[], help="comma-separated schedule JSON files to include")
    p.add_argument("-n", "--samples", type=at_least(2), default=1000, help="samples per evaluation (fixed noise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed noise set")
    p.add_argument("--guidance-scale", type=finite_float,
                   help="classifier-free guidance scale (class-conditional models with a null class)")
    p.add_argument("--metrics", type=csv_arg,
                   help="comma-separated metrics to tabulate, or 'all' (default: the objective: fid with reference "
                        "images, mmd for mixtures, clip_score with --clip-model, else ref_rmse); e.g. "
                        "fid,kid,precision,recall,accuracy,clip_score")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--plot", help="write a quality-vs-NFE plot here (.png, .pdf or .svg; no suffix: .png)")
    p.add_argument("--json", help="write all results as JSON here")
    p.add_argument("--reference", help="reference images for FID/KID/precision-recall: a folder of images or a "
                   ".pt/.npy/.npz tensor (uint8, or floats in [-1, 1]); default for digits: its training split")
    p.add_argument("--extractor", help="torch-fidelity feature extractor (default: schedsearch-digits for the "
                   "digits model, inception-v3-compat otherwise)")
    p.add_argument("--extractor-weights", help="local weights file for the extractor (nothing is downloaded)")
    p.add_argument("--clip-model", help="a local CLIPModel directory (with its tokenizer): the clip_score of "
                   "text-to-image samples against their prompts")
    add_prompt_options(p)
    p.add_argument("--cache-dir", default="~/.cache/schedsearch", help="reference-statistics cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_compare)
