"""Artifacts a search needs to resume exactly (fixed noise sets, reference-statistics metadata).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ss_artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["ss_searches.id"], name="fk_ss_artifacts_search_id_ss_searches",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_ss_artifacts"),
        sa.UniqueConstraint("search_id", "kind", name="uq_ss_artifacts_search_kind"),
    )


def downgrade() -> None:
    op.drop_table("ss_artifacts")
