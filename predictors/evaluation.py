"""How well a predictor ranks schedules it never saw: k-fold Kendall τ, per NFE, against trivial rankers.

Every measured schedule lands in exactly one held-out fold; a predictor fitted on the other
folds ranks it. τ is computed within each fold (and within each NFE of a fold: ranking
schedules of one NFE is what a search at that NFE needs) and averaged over the folds. The
trivial rankers are the rules of thumb a predictor must beat: "higher order is better" and
"closer to the uniform-λ grid is better".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from schedsearch.solvers import NoiseSchedule, Schedule

from .predictor import Predictor, PredictorConfig, kendall_tau
from .spectrum import ModelSpectrum


def higher_order_score(schedule: Schedule) -> float:
    """Trivial ranker: the mean step order (higher = better, so its negation is the score)."""
    return -float(np.mean([s.order for s in schedule.steps]))


def uniform_lambda_score(schedule: Schedule, noise_schedule: NoiseSchedule) -> float:
    """Trivial ranker: mean |λ − λ_uniform| over the finite interior times (smaller = closer = better)."""
    lam = np.asarray(noise_schedule.lambda_(list(schedule.timesteps)), dtype=np.float64)
    finite = np.isfinite(lam)
    lam = lam[finite]
    if lam.size < 3:
        return 0.0
    grid = np.linspace(lam[0], lam[-1], lam.size)
    return float(np.abs(lam - grid)[1:-1].mean())


TRIVIAL = ("higher_order", "uniform_lambda")


@dataclass
class CrossValidation:
    """Held-out τ (mean over folds, with the spread), per NFE, for the predictor and the trivial rankers."""

    trials: int
    folds: int
    tau: float
    tau_std: float
    tau_per_nfe: dict[int, float]
    trivial: dict[str, float]
    trivial_per_nfe: dict[str, dict[int, float]]
    predicted: list[float] = field(default_factory=list)  # out-of-fold predictions, in the input order
    fold_of: list[int] = field(default_factory=list)
    loss_history: list[list[float]] = field(default_factory=list)  # per fold

    def to_dict(self) -> dict[str, object]:
        return {"trials": self.trials, "folds": self.folds, "kendall_tau": self.tau, "kendall_tau_std": self.tau_std,
                "kendall_tau_per_nfe": {str(k): v for k, v in self.tau_per_nfe.items()},
                "trivial_rankers": self.trivial,
                "trivial_rankers_per_nfe": {name: {str(k): v for k, v in per.items()}
                                            for name, per in self.trivial_per_nfe.items()}}


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _fold_taus(scores: np.ndarray, objectives: np.ndarray, nfes: np.ndarray, fold_of: np.ndarray,
               folds: int) -> tuple[list[float], dict[int, float]]:
    overall: list[float] = []
    per: dict[int, list[float]] = {}
    for f in range(folds):
        idx = np.flatnonzero(fold_of == f)
        overall.append(kendall_tau(scores[idx], objectives[idx]))
        for nfe in sorted(set(nfes[idx].tolist())):
            sub = idx[nfes[idx] == nfe]
            if len(sub) >= 5:
                per.setdefault(int(nfe), []).append(kendall_tau(scores[sub], objectives[sub]))
    return overall, {k: _nanmean(v) for k, v in sorted(per.items())}


def cross_validate(schedules: Sequence[Schedule], objectives: Sequence[float], noise_schedule: NoiseSchedule,
                   config: PredictorConfig | None = None, folds: int = 5, seed: int = 0,
                   guidance_scale: float | None = None, spectrum: ModelSpectrum | None = None) -> CrossValidation:
    """k-fold held-out ranking quality of a predictor on measured ``schedules`` (lower objective = better)."""
    n = len(schedules)
    if n < 2 * folds or folds < 2:
        raise ValueError(f"predictor: {n} measured schedules are too few for {folds}-fold validation "
                         f"(need at least {2 * folds})")
    obj = np.asarray(objectives, dtype=np.float64)
    nfes = np.asarray([s.nfe for s in schedules])
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[rng.permutation(n)] = np.arange(n) % folds
    predicted = np.empty(n, dtype=np.float64)
    histories = []
    for f in range(folds):
        train = np.flatnonzero(fold_of != f)
        held = np.flatnonzero(fold_of == f)
        p = Predictor(noise_schedule, config, guidance_scale=guidance_scale, seed=seed + f, spectrum=spectrum)
        report = p.fit([schedules[i] for i in train], obj[train].tolist(), torch.Generator().manual_seed(seed + f))
        histories.append(report.loss_history)
        predicted[held] = p.predict([schedules[i] for i in held])
    taus, per_nfe = _fold_taus(predicted, obj, nfes, fold_of, folds)
    trivial: dict[str, float] = {}
    trivial_per: dict[str, dict[int, float]] = {}
    for name in TRIVIAL:
        scores = np.asarray([higher_order_score(s) if name == "higher_order" else
                             uniform_lambda_score(s, noise_schedule) for s in schedules])
        t, per = _fold_taus(scores, obj, nfes, fold_of, folds)
        trivial[name], trivial_per[name] = _nanmean(t), per
    return CrossValidation(n, folds, _nanmean(taus), float(np.nanstd(taus)), per_nfe, trivial, trivial_per,
                           predicted.tolist(), fold_of.tolist(), histories)
