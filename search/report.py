"""Plots of a search, from its stored trials: progress, the winning schedules, quality vs NFE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from schedsearch.solvers import NoiseSchedule, Schedule
from schedsearch.storage import Stage, TrialRecord, TrialState

from .metrics.quality import LOWER_IS_BETTER
from .results import NfeSummary


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_progress(trials: Sequence[TrialRecord], objective: str, level: int, path: Path, title: str) -> Path:
    """Objective of every proposal (first fidelity level) by trial number, the best so far per NFE, and the
    best baseline per NFE as a horizontal line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    lower = objective in LOWER_IS_BETTER
    nfes = sorted({t.nfe for t in trials if t.stage in (Stage.SEARCH, Stage.BASELINE)})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values: list[float] = []
    for i, nfe in enumerate(nfes):
        color = colors[i % len(colors)]
        pts = [t for t in trials if t.nfe == nfe and t.fidelity == level and t.state is TrialState.COMPLETE
               and t.stage in (Stage.SEARCH, Stage.BASELINE) and objective in t.metrics]
        search = [t for t in pts if t.stage is Stage.SEARCH]
        base = [t for t in pts if t.stage is Stage.BASELINE]
        label = f"NFE {nfe}" if len(nfes) > 1 else "proposals"
        ax.scatter([t.number for t in search], [t.metrics[objective] for t in search], s=10, color=color, alpha=0.5,
                   label=label)
        ax.scatter([t.number for t in base], [t.metrics[objective] for t in base], s=14, marker="s", color=color,
                   alpha=0.3, label="baselines" if i == 0 else None)
        if search:
            xs = [t.number for t in search]
            ys = np.array([t.metrics[objective] for t in search])
            best = np.minimum.accumulate(ys) if lower else np.maximum.accumulate(ys)
            ax.step(xs, best, where="post", color=color, lw=1.8, label=f"best so far (NFE {nfe})")
        if base:
            b = min(t.metrics[objective] for t in base) if lower else max(t.metrics[objective] for t in base)
            ax.axhline(b, color=color, ls="--", lw=1, label=f"best baseline (NFE {nfe})")
        values += [t.metrics[objective] for t in pts]
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} ({level} samples, search noise)")
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
        finite = sorted(values)
        ax.set_ylim(finite[0] * 0.8, finite[min(len(finite) - 1, int(0.9 * len(finite)))] * 3)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _step_text(schedule: Schedule, k: int) -> str:
    step = schedule.steps[k]
    text = f"{'D' if step.prediction.value == 'data' else 'N'}{step.order}"
    if k == 0 and schedule.analytic_first_step is not None:
        text = f"x̂₀={schedule.analytic_first_step.value}\n(no NFE)\n" + text
    if step.estimator.value != "taylor":
        text += f"\n{step.estimator.value}"
    if step.corrector.value != "none":
        text += "\n+" + step.corrector.value[:4]
    if any(d.active_points != tuple(range(-1, -i - 2, -1)) or d.relaxation != 1.0
           for i, d in enumerate(step.derivatives)):
        text += "\n" + ";".join(",".join(map(str, d.active_points)) + (f"×{d.relaxation:.2g}" if d.relaxation != 1 else "")
                                for d in step.derivatives)
    return text


def plot_schedules(summary: NfeSummary, noise_schedule: NoiseSchedule, path: Path, title: str) -> Path:
    """The winner and the best baseline: their times on the λ axis (log-SNR, data to the right), the
    decision of every step (D/N = data/noise prediction with its order, estimator, corrector, points) and,
    for refined schedules, the model time the network is told at each point (a red triangle below it)."""
    plt = _pyplot()
    rows = [r for r in (summary.winner, summary.best_baseline) if r is not None]
    if summary.winner is not None and summary.best_baseline is not None and summary.winner is summary.best_baseline:
        rows = [summary.winner]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 1.3 * len(rows)))
    lam_hi = float(noise_schedule.lambda_(noise_schedule.t_min))
    for y, row in enumerate(reversed(rows)):
        s = Schedule.from_dict(row.schedule)
        lam = np.asarray(noise_schedule.lambda_(list(s.timesteps)), dtype=np.float64)
        lam = np.where(np.isfinite(lam), lam, lam_hi + 1.0)  # the data (σ = 0) drawn just past the last time
        ax.plot(lam, [y] * len(lam), "-", color="0.7", zorder=1)
        ax.scatter(lam[:-1], [y] * (len(lam) - 1), s=40, zorder=2, label=None)
        ax.scatter(lam[-1:], [y], s=40, marker="D" if s.ends_at_data else "o", color="k", zorder=2)
        for k in range(len(s.steps)):
            ax.text((lam[k] + lam[k + 1]) / 2, y + 0.12, _step_text(s, k), ha="center", va="bottom", fontsize=6.5)
        told = [(k, st.model_time) for k, st in enumerate(s.steps) if st.model_time is not None]
        if told:  # a refined schedule's model times: what the network is told at each point
            at = np.asarray(noise_schedule.lambda_([t for _, t in told]), dtype=np.float64)
            ax.scatter(at, [y - 0.1] * len(at), s=22, marker="^", color="tab:red", zorder=3)
            for (k, _), x in zip(told, at):
                ax.plot([lam[k], x], [y, y - 0.1], "-", color="tab:red", lw=0.8, zorder=2)
        held = "" if row.holdout is None else f"  (held-out {summary.objective} {row.holdout:.4g})"
        ax.text(lam[0], y - 0.25, f"{row.label}{held}", fontsize=8, va="top")
    ax.set_yticks([])
    ax.set_ylim(-0.6, len(rows) - 0.2 + 0.5)
    ax.set_xlabel("λ = log(α/σ)   (noise → data; ◆ = the data, σ = 0; ▲ = a learned model time)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_quality_vs_nfe(summaries: Mapping[int, NfeSummary], path: Path, title: str) -> Path:
    """Held-out objective of the winner and of the best baseline per NFE, with the model's floor."""
    plt = _pyplot()
    nfes = sorted(summaries)
    objective = summaries[nfes[0]].objective
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pick in (("searched winner", lambda s: s.winner), ("best baseline", lambda s: s.best_baseline)):
        xs = [n for n in nfes if pick(summaries[n]) is not None and pick(summaries[n]).holdout is not None]
        ax.plot(xs, [pick(summaries[n]).holdout for n in xs], marker="o", label=label)
    floor = summaries[nfes[0]].floor_holdout
    if floor is not None:
        ax.axhline(floor, color="k", ls=":", label="floor (reference solve)")
    ax.set_xlabel("NFE")
    ax.set_xticks(nfes)
    ax.set_ylabel(f"{objective} (held-out noise)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
