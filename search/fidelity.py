"""Successive halving over the sample count (asynchronous, as ASHA): pure functions of the trials.

Every proposal is measured with ``levels[0]`` draws of the search noise. Whenever a level
holds n results at one NFE, its best ⌊n/η⌋ (objective, then trial number) are re-measured
at the next level — a new trial with stage ``promote``. Objectives are compared only within
a level (FID depends on the sample count).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from schedsearch.storage import Stage, TrialRecord, TrialState

#: stages of the search proper, measured on the search noise (their objectives are comparable level by level)
SEARCH_STAGES = (Stage.BASELINE, Stage.SEARCH, Stage.PROMOTE)
#: every stage measured on the search noise: the search's and the refined schedules (after the budget)
SEARCH_NOISE_STAGES = (*SEARCH_STAGES, Stage.REFINE)


def level_results(trials: Iterable[TrialRecord], level: int, nfe: int | None = None) -> list[TrialRecord]:
    """Complete search-noise trials measured at ``level`` samples, best first, one per schedule."""
    best: dict[str, TrialRecord] = {}
    for t in trials:
        if (t.stage in SEARCH_STAGES and t.fidelity == level and t.state is TrialState.COMPLETE
                and t.objective is not None and (nfe is None or t.nfe == nfe)):
            if t.schedule_hash not in best or (t.objective, t.number) < (best[t.schedule_hash].objective,
                                                                          best[t.schedule_hash].number):
                best[t.schedule_hash] = t
    return sorted(best.values(), key=lambda t: (t.objective, t.number))


def promotions(trials: Sequence[TrialRecord], levels: Sequence[int], eta: int) -> list[tuple[TrialRecord, int]]:
    """(trial, next level) pairs due for promotion, higher levels first, best first within a level."""
    measured = {(t.schedule_hash, t.fidelity) for t in trials if t.stage in SEARCH_STAGES}
    out: list[tuple[TrialRecord, int]] = []
    for nfe in sorted({t.nfe for t in trials}):
        for r in range(len(levels) - 2, -1, -1):
            done = level_results(trials, levels[r], nfe)
            for t in done[: len(done) // eta]:
                if (t.schedule_hash, levels[r + 1]) not in measured:
                    out.append((t, levels[r + 1]))
    out.sort(key=lambda pair: (-pair[1], pair[0].objective, pair[0].number))
    return out


def evidence(trial: TrialRecord) -> tuple[int, int, float, int]:
    """Sort key, best first: held-out before search noise, more samples first, lower objective, older trial."""
    objective = trial.objective if trial.objective is not None else float("inf")
    return (-int(trial.stage is Stage.HOLDOUT), -(trial.fidelity or 0), objective, trial.number)


def top_schedules(trials: Iterable[TrialRecord], nfe: int, k: int, stages: Sequence[Stage]) -> list[TrialRecord]:
    """The k best distinct schedules at ``nfe`` among search-noise trials whose schedule first appeared in
    ``stages``, each by its best evidence (the most samples it was measured with, then its objective)."""
    trials = list(trials)
    origin: dict[str, Stage] = {}
    for t in sorted(trials, key=lambda t: t.number):
        origin.setdefault(t.schedule_hash, t.stage)
    best: dict[str, TrialRecord] = {}
    for t in trials:
        if (t.stage in SEARCH_NOISE_STAGES and t.nfe == nfe and t.state is TrialState.COMPLETE
                and t.objective is not None and origin[t.schedule_hash] in stages):
            if t.schedule_hash not in best or evidence(t) < evidence(best[t.schedule_hash]):
                best[t.schedule_hash] = t
    return sorted(best.values(), key=evidence)[:k]
