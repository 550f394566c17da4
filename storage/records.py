"""Frozen records returned at the store boundary (never live ORM objects)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class TrialState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"  # stopped early by the engine's scheduler (ASHA): its metrics are at fewer samples


class Stage(StrEnum):
    """Which part of a search made a trial.

    ``baseline``: a hand-designed solver, evaluated first; ``search``: a strategy's proposal;
    ``promote``: a schedule re-measured with more samples (successive halving);
    ``refine``: a schedule whose continuous numbers were learned against a teacher (from the trial
    ``meta["refined_from"]``), measured on the search noise at the highest fidelity;
    ``holdout``: re-measured on the held-out noise set (the figures a winner is chosen on).
    """

    BASELINE = "baseline"
    SEARCH = "search"
    PROMOTE = "promote"
    REFINE = "refine"
    HOLDOUT = "holdout"


@dataclass(frozen=True)
class SearchRecord:
    id: int
    name: str
    config: Mapping[str, Any]
    model_ref: str
    objective: str
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TrialRecord:
    id: int
    search_id: int
    number: int
    state: TrialState
    schedule: Mapping[str, Any]
    schedule_hash: str
    nfe: int
    fidelity: int | None
    metrics: Mapping[str, Any]
    objective: float | None
    predicted: float | None
    worker: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    stage: Stage = Stage.SEARCH
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state.value,
            "nfe": self.nfe,
            "objective": self.objective,
            "metrics": dict(self.metrics),
            "fidelity": self.fidelity,
            "stage": self.stage.value,
            "predicted": self.predicted,
            "worker": self.worker,
            "error": self.error,
            "seconds": self.seconds,
            "schedule": dict(self.schedule),
        }


@dataclass(frozen=True)
class NewTrial:
    """A trial to enqueue: schedule JSON (as a dict), its canonical hash and NFE."""

    schedule: Mapping[str, Any]
    schedule_hash: str
    nfe: int
    fidelity: int | None = None
    predicted: float | None = None
    stage: Stage = Stage.SEARCH
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictorCheckpoint:
    id: int
    search_id: int
    weights: bytes
    meta: Mapping[str, Any]
    created_at: datetime
