"""A finished (or running) search read back from its trials: winners, baselines, floor, gap closed.

Pure functions of stored trials: the CLI's table, ``report`` and ``export`` all read the same
figures. Per NFE, every schedule that was validated (the best searched ones and the best
baselines) shows its objective on the search noise at the highest fidelity and on the
held-out noise; the winner is the best held-out figure — it may be a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schedsearch.storage import Stage, TrialRecord, TrialState

from .metrics.quality import LOWER_IS_BETTER

#: metrics shown beside the objective when measured (the ones a search did not optimise tell
#: whether a gain is real or fitted to one metric)
REPORTED = ("fid", "kid", "precision", "recall", "accuracy", "ref_rmse", "mmd", "nll", "fid_b")


@dataclass(frozen=True)
class Figures:
    """One validated schedule: its objective on the search noise (``search_samples`` draws) and held out."""

    label: str
    trial: int
    nfe: int
    baseline: bool
    schedule: Mapping[str, Any]
    search: float | None
    search_samples: int | None
    holdout: float | None
    holdout_trial: int | None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NfeSummary:
    nfe: int
    objective: str
    winner: Figures | None
    searched: tuple[Figures, ...]
    baselines: tuple[Figures, ...]
    floor: Mapping[str, Mapping[str, float]]

    @property
    def best_baseline(self) -> Figures | None:
        done = [b for b in self.baselines if b.holdout is not None]
        return min(done, key=lambda b: _signed(self.objective, b.holdout)) if done else None  # type: ignore[arg-type]

    @property
    def floor_holdout(self) -> float | None:
        return self.floor.get("holdout", {}).get(self.objective)

    @property
    def ratio(self) -> float | None:
        """Winner's held-out objective over the best baseline's."""
        w, b = self.winner, self.best_baseline
        if w is None or b is None or w.holdout is None or not b.holdout:
            return None
        return w.holdout / b.holdout

    @property
    def gap_closed(self) -> float | None:
        """Share of the gap (best baseline − floor) the winner closes, on held-out noise."""
        w, b, f = self.winner, self.best_baseline, self.floor_holdout
        if w is None or b is None or f is None or w.holdout is None or b.holdout is None:
            return None
        gap = _signed(self.objective, b.holdout) - _signed(self.objective, f)
        if gap <= 0:
            return None
        return (_signed(self.objective, b.holdout) - _signed(self.objective, w.holdout)) / gap


def _signed(objective: str, value: float) -> float:
    return value if objective in LOWER_IS_BETTER else -value


def _label(origin: TrialRecord, by_number: Mapping[int, TrialRecord], first: Mapping[str, TrialRecord]) -> str:
    """How a schedule (the trial that first measured it) is named in tables: its baseline, ``searched #N``, or
    ``refined #N (from …)`` naming the schedule it was refined from."""
    if origin.stage is Stage.REFINE:
        source = by_number.get(origin.meta.get("refined_from", -1))
        if source is None:
            return f"refined #{origin.number}"
        return f"refined #{origin.number} (from {_label(first[source.schedule_hash], by_number, first)})"
    prov = origin.meta if origin.stage is Stage.BASELINE else {}
    if "baseline" in prov:
        return f"{prov['baseline']}/{prov['grid']}"
    return f"searched #{origin.number}"


def summarize(trials: Iterable[TrialRecord], objective: str,
              floor: Mapping[str, Mapping[str, float]] | None = None) -> dict[int, NfeSummary]:
    """Per NFE: the validated schedules with their search and held-out figures, and the winner."""
    trials = sorted(trials, key=lambda t: t.number)
    origin: dict[str, TrialRecord] = {}
    for t in trials:
        origin.setdefault(t.schedule_hash, t)
    by_number = {t.number: t for t in trials}
    holdouts = [t for t in trials if t.stage is Stage.HOLDOUT]
    out: dict[int, NfeSummary] = {}
    for nfe in sorted({t.nfe for t in trials if t.stage is not Stage.HOLDOUT}):
        rows: list[Figures] = []
        for h in [t for t in holdouts if t.nfe == nfe]:
            first = origin[h.schedule_hash]
            search = _top_search(trials, h.schedule_hash)
            done = h.state is TrialState.COMPLETE and h.objective is not None
            rows.append(Figures(
                label=_label(first, by_number, origin), trial=first.number, nfe=nfe, baseline=first.stage is Stage.BASELINE,
                schedule=h.schedule, search=None if search is None else search.metrics.get(objective),
                search_samples=None if search is None else search.fidelity,
                holdout=h.metrics.get(objective) if done else None, holdout_trial=h.number,
                metrics=dict(h.metrics) if done else {},
            ))
        done = [r for r in rows if r.holdout is not None]
        winner = min(done, key=lambda r: (_signed(objective, r.holdout), r.trial)) if done else None  # type: ignore
        key = (lambda r: (r.holdout is None, _signed(objective, r.holdout or 0.0), r.trial))
        out[nfe] = NfeSummary(nfe, objective, winner, tuple(sorted((r for r in rows if not r.baseline), key=key)),
                              tuple(sorted((r for r in rows if r.baseline), key=key)), dict(floor or {}))
    return out


def _top_search(trials: Sequence[TrialRecord], schedule_hash: str) -> TrialRecord | None:
    """The schedule's search-noise result with the most samples."""
    pool = [t for t in trials if t.schedule_hash == schedule_hash and t.stage is not Stage.HOLDOUT
            and t.state is TrialState.COMPLETE]
    return max(pool, key=lambda t: (t.fidelity or 0, -t.number)) if pool else None


@dataclass(frozen=True)
class SummaryTable:
    """One NFE's comparison as a table: a heading, the header, rows (winner marked) and a verdict line."""

    heading: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    winner_row: int | None
    verdict: str | None


def summary_table(s: NfeSummary, search_seed: int, holdout_seed: int, holdout_samples: int) -> SummaryTable:
    """The figures of one NFE: searched schedules, baselines and the floor, search-noise and held out."""
    direction = "lower" if s.objective in LOWER_IS_BETTER else "higher"
    samples = next((r.search_samples for r in (*s.searched, *s.baselines) if r.search_samples), None)
    heading = (f"NFE {s.nfe} — {s.objective} ({direction} is better); search noise: seed {search_seed}, "
               f"{samples} samples; held-out noise: seed {holdout_seed}, {holdout_samples} samples")
    extra = [m for m in REPORTED if m != s.objective and any(m in r.metrics for r in (*s.searched, *s.baselines))]
    rows: list[tuple[str, ...]] = []
    winner_row = None
    for r in (*s.searched, *s.baselines):
        if s.winner is not None and r.holdout_trial == s.winner.holdout_trial:
            winner_row = len(rows)
        rows.append((r.label, _fmt(r.search), _fmt(r.holdout), *[_fmt(r.metrics.get(m)) for m in extra]))
    floor_s = s.floor.get("search", {}).get(s.objective)
    floor_h = s.floor.get("holdout", {})
    rows.append(("floor (reference solve)", _fmt(floor_s), _fmt(floor_h.get(s.objective)),
                 *[_fmt(floor_h.get(m)) if m != "ref_rmse" else "0" for m in extra]))
    verdict = None
    b = s.best_baseline
    if s.winner is not None and b is not None:
        ratio, gap = s.ratio, s.gap_closed
        parts = ["the best baseline wins" if s.winner.baseline else f"winner {s.winner.label}",
                 f"vs best baseline {b.label}"]
        if ratio is not None:
            parts.append(f"ratio {ratio:.3f}")
        if gap is not None:
            parts.append(f"gap to the floor closed {100 * gap:.0f} %")
        verdict = "; ".join(parts)
    return SummaryTable(heading, ("", "search", "held-out", *extra), tuple(rows), winner_row, verdict)


def format_summary(summaries: Mapping[int, NfeSummary], search_seed: int, holdout_seed: int,
                   holdout_samples: int) -> str:
    """The table printed at the end of a search (and by ``report``)."""
    lines: list[str] = []
    for s in summaries.values():
        t = summary_table(s, search_seed, holdout_seed, holdout_samples)
        lines.append(t.heading)
        rows = [tuple(r) if i != t.winner_row else (r[0] + " ◀ winner", *r[1:]) for i, r in enumerate(t.rows)]
        widths = [max(len(row[i]) for row in [t.header, *rows]) for i in range(len(t.header))]
        for row in (t.header, *rows):
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if t.verdict:
            lines.append(t.verdict)
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}"
