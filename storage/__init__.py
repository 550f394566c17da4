"""storage: SQLAlchemy models and the trial store (SQLite by default, PostgreSQL by URL)."""

from .records import NewTrial, PredictorCheckpoint, SearchRecord, Stage, TrialRecord, TrialState
from .store import DEFAULT_DB, StoreError, TrialStore

__all__ = [
    "DEFAULT_DB", "NewTrial", "PredictorCheckpoint", "SearchRecord", "Stage", "StoreError", "TrialRecord", "TrialState",
    "TrialStore",
]
