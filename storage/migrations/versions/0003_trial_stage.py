"""Trials carry the stage of the search that made them (baseline, search, promote, holdout) and
the strategy's bookkeeping (e.g. its Optuna trial number) as JSON.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ss_trials") as batch:
        batch.add_column(sa.Column("stage", sa.String(16), nullable=False, server_default="search"))
        batch.add_column(sa.Column("meta", sa.JSON(), nullable=True))
        batch.create_index("ix_ss_trials_search_stage_fidelity", ["search_id", "stage", "fidelity"])


def downgrade() -> None:
    with op.batch_alter_table("ss_trials") as batch:
        batch.drop_index("ix_ss_trials_search_stage_fidelity")
        batch.drop_column("meta")
        batch.drop_column("stage")
