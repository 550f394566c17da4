"""SQLAlchemy 2 tables of the trial store.

The store keeps schedule JSON and bytes, never solver objects: ``storage`` imports
nothing else of the project. Table names carry the ``ss_`` prefix so that Optuna's
tables (and its ``alembic_version``) can share the database.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON}


class SearchRow(Base):
    __tablename__ = "ss_searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_ref: Mapped[str] = mapped_column(String(1000))
    objective: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="created")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class TrialRow(Base):
    __tablename__ = "ss_trials"
    __table_args__ = (
        UniqueConstraint("search_id", "number", name="uq_ss_trials_search_number"),
        Index("ix_ss_trials_search_state", "search_id", "state"),
        Index("ix_ss_trials_search_objective", "search_id", "objective"),
        Index("ix_ss_trials_search_hash", "search_id", "schedule_hash"),
        Index("ix_ss_trials_search_stage_fidelity", "search_id", "stage", "fidelity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("ss_searches.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    schedule_hash: Mapped[str] = mapped_column(String(64))
    nfe: Mapped[int] = mapped_column(Integer)
    fidelity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: which part of the search made the trial: baseline, search, promote (more samples), holdout
    stage: Mapped[str] = mapped_column(String(16), default="search", server_default="search")
    #: the strategy's bookkeeping for this trial (e.g. its Optuna trial number, the parents)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    predicted: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class BestScheduleRow(Base):
    __tablename__ = "ss_best_schedules"
    __table_args__ = (UniqueConstraint("search_id", "nfe", name="uq_ss_best_schedules_search_nfe"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("ss_searches.id", ondelete="CASCADE"))
    nfe: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[int] = mapped_column(ForeignKey("ss_trials.id", ondelete="CASCADE"))
    objective: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class PredictorCheckpointRow(Base):
    __tablename__ = "ss_predictor_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("ss_searches.id", ondelete="CASCADE"))
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ArtifactRow(Base):
    """Named blobs a search needs to resume exactly: fixed noise sets, reference-statistics metadata."""

    __tablename__ = "ss_artifacts"
    __table_args__ = (UniqueConstraint("search_id", "kind", name="uq_ss_artifacts_search_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("ss_searches.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
