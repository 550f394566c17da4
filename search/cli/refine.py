"""``schedsearch refine``: learn a schedule's times and coefficients against the model's teacher."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import UserError, add_prompt_options, at_least, check_guidance, finite_float, output_path, prompted, \
    read_schedule


def _cmd_refine(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from schedsearch.solvers import load_model
    from schedsearch.solvers.parameters import RefineTargets
    from schedsearch.search.refine import RefineSettings, feature_network, refine, resolve_feature_weight

    out = output_path("-o/--output", args.output, ("json",))
    schedule = read_schedule(args.schedule)
    model = prompted(load_model(args.model, device=args.device), args)
    schedule.check_for(model.noise_schedule)
    check_guidance("--guidance-scale", args.guidance_scale, model)
    features = feature_network(model)
    try:
        weight = resolve_feature_weight(args.feature_weight, features)
        targets = RefineTargets(times=not args.no_times, relaxations=not args.no_relaxations,
                                free_weights=not args.no_free_weights, model_times=not args.no_model_times)
        settings = RefineSettings(
            iterations=args.iterations, samples=args.samples, seed=args.seed, batch_size=args.batch_size,
            lr_times=args.lr_times, lr_coefficients=args.lr_coefficients, guidance_scale=args.guidance_scale,
            targets=targets, cache_root=None if args.cache_dir is None else Path(args.cache_dir).expanduser(),
            feature_weight=weight, distance=args.distance,
        )
    except ValueError as exc:
        raise UserError(f"refine: {exc}") from None
    loss = "L2" + (f" + {weight:g} x feature distance" if weight > 0 else "")
    print(f"refining {args.schedule} (NFE {schedule.nfe}) on {model.name}: teacher = {settings.teacher_steps}-step "
          f"DPM-Solver++ 3M on {settings.samples} training draws (seed {settings.seed}); loss {loss}", file=sys.stderr)
    bar = tqdm(total=settings.iterations, desc="refine", unit="it", file=sys.stderr, dynamic_ncols=True,
               disable=args.quiet)
    shown: dict[str, str] = {}

    def progress(iteration: int, train: float, validation: float | None) -> None:
        shown["train"] = f"{train:.3g}"
        if validation is not None:
            shown["val"] = f"{validation:.3g}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    try:
        result = refine(model, schedule, settings, progress, features=features if weight > 0 else None)
    finally:
        bar.close()
    out.write_text(result.schedule.to_json() + "\n")
    print(f"refined NFE {result.schedule.nfe}: validation loss {result.initial_loss:.4g} -> {result.loss:.4g} "
          f"(x{result.improvement:.3f}) in {result.seconds:.0f} s, best at iteration {result.best_iteration} "
          f"of {result.iterations}; wrote {out}")


def register(sub: Any) -> None:
    from ..refine_defaults import DISTANCES, REFINE_DEFAULTS

    p = sub.add_parser("refine", help="learn a schedule's times and coefficients against a high-NFE teacher")
    p.add_argument("schedule", help="schedule JSON file (a baseline, a search winner, an exported schedule)")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("-o", "--output", required=True, help="the refined schedule's JSON file")
    d = REFINE_DEFAULTS
    p.add_argument("--iterations", type=at_least(1), default=d["iterations"],
                   help=f"optimiser steps (default {d['iterations']}; fewer when the validation loss stops improving)")
    p.add_argument("--samples", type=at_least(4), default=d["samples"],
                   help=f"training draws; a quarter of them is the validation split (default {d['samples']})")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed of the training noise; keep it apart from the search (0) and held-out (1) seeds "
                        f"(default {d['seed']})")
    p.add_argument("--batch-size", type=at_least(1), default=d["batch_size"],
                   help=f"draws per optimiser step (default {d['batch_size']})")
    p.add_argument("--lr-times", type=finite_float, default=d["lr_times"],
                   help=f"Adam's rate on the time logits (default {d['lr_times']:g})")
    p.add_argument("--lr-coefficients", type=finite_float, default=d["lr_coefficients"],
                   help=f"Adam's rate on relaxations and free weights (default {d['lr_coefficients']:g})")
    p.add_argument("--feature-weight", type=finite_float,
                   help="weight of the distance in image features beside the L2 distance (default: 1 for the digits "
                        "model, whose bundled classifier gives the features; 0 elsewhere)")
    p.add_argument("--distance", choices=DISTANCES, default=d["distance"],
                   help="per draw, the distance to the teacher averaged over the draws: euclidean (robust to the few "
                        "draws no schedule brings near their teacher) or its square, the mean squared error "
                        f"(default {d['distance']})")
    p.add_argument("--no-times", action="store_true", help="keep the times")
    p.add_argument("--no-relaxations", action="store_true", help="keep the derivative relaxations")
    p.add_argument("--no-free-weights", action="store_true", help="keep the analytic weights")
    p.add_argument("--no-model-times", action="store_true",
                   help="tell the network the solver's own times (with --no-free-weights the result stays a "
                        "schedule of format /1)")
    add_prompt_options(p)
    p.add_argument("--guidance-scale", type=finite_float,
                   help="classifier-free guidance scale of the sampler and the teacher (default: the schedule's)")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--cache-dir", help="keep the teacher's solution here (reused by later refinements)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_refine)
