"""``schedsearch compare``: every baseline (solver × grid) and given schedules, per NFE.

The first thing a user runs on their own model: a table of the objective per NFE (best
marked) and a quality-vs-NFE plot.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from schedsearch.solvers import DiffusionModel, Schedule, ScheduleError, baseline

from .evaluator import EvalResult, Evaluator, SampleEvaluator
from .metrics.quality import LOWER_IS_BETTER, METRIC_UNITS
from .metrics.suite import metric_suite
from .noise_set import NoiseSet


@dataclass(frozen=True)
class Row:
    label: str
    nfe: int
    result: EvalResult


def default_evaluator(
    model: DiffusionModel,
    num_samples: int,
    seed: int = 0,
    guidance_scale: float | None = None,
    reference_images: torch.Tensor | None = None,
    cache_root: Path | None = None,
    extractor: str | None = None,
    extractor_weights: Path | None = None,
    clip_model: Path | None = None,
) -> Evaluator:
    """Metrics that fit the model: exact laws for mixtures, FID/KID/PR + accuracy for digits, else reference RMSE.

    Given ``reference_images`` (uint8 or [−1, 1], shaped like the model's images), FID / KID /
    precision-recall run through torch-fidelity with ``extractor`` (default: the digits
    classifier for the digits model, Inception otherwise) and, where given, a local
    weights file for it.
    """
    noises = NoiseSet.draw(model.sample_shape, num_samples, seed, model.num_classes, dtype=model.state_dtype)
    metrics, objective = metric_suite(model, guidance_scale, reference_images, cache_root, extractor,
                                      extractor_weights, clip_model=clip_model)
    return SampleEvaluator(model, noises, metrics, objective, guidance_scale=guidance_scale)


def run_compare(
    model: DiffusionModel,
    evaluator: Evaluator,
    nfes: Sequence[int],
    solvers: Sequence[str],
    grids: Sequence[str | Sequence[float]],
    schedules: Sequence[tuple[str, Schedule]] = (),
    progress: bool = True,
) -> list[Row]:
    """Evaluate every (solver, grid) at every NFE and every given schedule.

    A grid is a name or an explicit list of model times; a baseline that cannot be built on a grid (e.g. a
    noise-prediction solver whose final time the grid leaves no room for) is a failed row with its reason.
    """
    from tqdm import tqdm

    jobs: list[tuple[str, int, Schedule | tuple[str, str | Sequence[float]]]] = [
        (f"{solver}/{grid_label(grid)}", nfe, (solver, grid)) for solver in solvers for grid in grids for nfe in nfes
    ]
    jobs += [(label, s.nfe, s) for label, s in schedules]
    rows = []
    bar = tqdm(jobs, disable=not progress, file=sys.stderr, unit="eval", dynamic_ncols=True)
    for label, nfe, spec in bar:
        bar.set_description(f"{label} NFE {nfe}")
        if isinstance(spec, Schedule):
            schedule = spec
        else:
            try:
                schedule = baseline(spec[0], nfe, model, grid=spec[1])
            except ScheduleError as exc:
                rows.append(Row(label, nfe, EvalResult({}, None, 0, 0.0, str(exc))))
                continue
        result = evaluator.evaluate(schedule)
        rows.append(Row(label, nfe, result))
        if result.objective is not None:
            bar.set_postfix({evaluator.objective: f"{result.metrics[evaluator.objective]:.4g}"})
    return rows


def metric_header(metric: str) -> str:
    """``name (lower is better; * = best at that NFE): what it measures, in which unit``."""
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    unit = METRIC_UNITS.get(metric)
    return f"{metric} ({direction} is better; * = best at that NFE)" + (f": {unit}" if unit else "")


def grid_label(grid: str | Sequence[float]) -> str:
    return grid if isinstance(grid, str) else ",".join(f"{t:g}" for t in grid)


def format_table(rows: Sequence[Row], metric: str, out: TextIO) -> None:
    """Rows = solver/grid or schedule, columns = NFE; the best value of ``metric`` per NFE is starred.

    A failed evaluation shows ``failed`` in its cell and its reason below the table.
    """
    nfes = sorted({r.nfe for r in rows})
    labels = list(dict.fromkeys(r.label for r in rows))
    cell = {(r.label, r.nfe): r.result for r in rows}
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    best = {}
    for nfe in nfes:
        ok = [(sign * res.metrics[metric], label) for (label, n), res in cell.items()
              if n == nfe and not res.failed and math.isfinite(res.metrics.get(metric, math.nan))]
        if ok:
            best[nfe] = min(ok)[1]
    width = max(len(label) for label in labels) + 2
    out.write(metric_header(metric) + "\n")
    out.write(f"{'':<{width}}" + "".join(f"{'NFE ' + str(n):>12}" for n in nfes) + "\n")
    for label in labels:
        line = f"{label:<{width}}"
        for nfe in nfes:
            res = cell.get((label, nfe))
            if res is None:
                text = ""
            elif res.failed:
                text = "failed "
            elif metric not in res.metrics:
                text = "- "
            else:
                text = f"{res.metrics[metric]:.4g}" + ("*" if best.get(nfe) == label else " ")
            line += f"{text:>12}"
        out.write(line + "\n")


def format_failures(rows: Sequence[Row], out: TextIO) -> None:
    """One line per failed solver/grid and reason, with the NFEs it failed at."""
    by_reason: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if r.result.failed:
            by_reason.setdefault((r.label, str(r.result.error)), []).append(r.nfe)
    for (label, reason), nfes in by_reason.items():
        out.write(f"failed: {label} at NFE {', '.join(map(str, sorted(nfes)))}: {reason}\n")


def plot(rows: Sequence[Row], objective: str, path: Path, title: str) -> None:
    """Quality vs NFE: per solver its best grid at each NFE (said in the legend); given schedules as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best: dict[str, dict[int, EvalResult]] = {}  # per solver and NFE, its best grid (signed objective: minimised)
    for r in rows:
        if r.result.objective is None:
            continue
        by_nfe = best.setdefault(r.label.split("/")[0], {})
        if r.nfe not in by_nfe or r.result.objective < by_nfe[r.nfe].objective:
            by_nfe[r.nfe] = r.result
    series = {name: {nfe: res.metrics[objective] for nfe, res in by_nfe.items()} for name, by_nfe in best.items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in sorted(series.items()):
        xs = sorted(values)
        ax.plot(xs, [values[x] for x in xs], marker="o" if len(xs) > 1 else "*", label=name)
    nfes = sorted({r.nfe for r in rows})
    ax.set_xticks(nfes)
    ax.set_xticklabels([str(n) for n in nfes])
    ax.set_xlabel("NFE (model evaluations)")
    direction = "lower" if objective in LOWER_IS_BETTER else "higher"
    ax.set_ylabel(f"{objective} ({direction} is better)")
    values = [v for s in series.values() for v in s.values()]
    if values and all(v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, ncol=2, title="solver at its best grid per NFE", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rows_to_json(rows: Sequence[Row]) -> str:
    def clean(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return json.dumps(
        [
            {"label": r.label, "nfe": r.nfe, "metrics": {k: clean(v) for k, v in r.result.metrics.items()},
             "objective": r.result.objective, "error": r.result.error, "seconds": round(r.result.seconds, 3)}
            for r in rows
        ],
        indent=2,
    )
