"""Initial schema: searches, trials, best schedules, predictor checkpoints.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ss_searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("model_ref", sa.String(1000), nullable=False),
        sa.Column("objective", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ss_searches"),
        sa.UniqueConstraint("name", name="uq_ss_searches_name"),
    )
    op.create_table(
        "ss_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("schedule_hash", sa.String(64), nullable=False),
        sa.Column("nfe", sa.Integer(), nullable=False),
        sa.Column("fidelity", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("objective", sa.Float(), nullable=True),
        sa.Column("predicted", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["search_id"], ["ss_searches.id"], name="fk_ss_trials_search_id_ss_searches",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_ss_trials"),
        sa.UniqueConstraint("search_id", "number", name="uq_ss_trials_search_number"),
    )
    op.create_index("ix_ss_trials_search_state", "ss_trials", ["search_id", "state"])
    op.create_index("ix_ss_trials_search_objective", "ss_trials", ["search_id", "objective"])
    op.create_index("ix_ss_trials_search_hash", "ss_trials", ["search_id", "schedule_hash"])
    op.create_table(
        "ss_best_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("nfe", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("objective", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["ss_searches.id"],
                                name="fk_ss_best_schedules_search_id_ss_searches", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["trial_id"], ["ss_trials.id"], name="fk_ss_best_schedules_trial_id_ss_trials",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_ss_best_schedules"),
        sa.UniqueConstraint("search_id", "nfe", name="uq_ss_best_schedules_search_nfe"),
    )
    op.create_table(
        "ss_predictor_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["ss_searches.id"],
                                name="fk_ss_predictor_checkpoints_search_id_ss_searches", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_ss_predictor_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("ss_predictor_checkpoints")
    op.drop_table("ss_best_schedules")
    op.drop_index("ix_ss_trials_search_hash", "ss_trials")
    op.drop_index("ix_ss_trials_search_objective", "ss_trials")
    op.drop_index("ix_ss_trials_search_state", "ss_trials")
    op.drop_table("ss_trials")
    op.drop_table("ss_searches")
