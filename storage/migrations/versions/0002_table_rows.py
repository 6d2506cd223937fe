"""The growing SIAP table of each job (schema version 2).

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
        "table_rows",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("field", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("result_id", sa.String(255), nullable=True),
        sa.Column("row", sa.Text(), nullable=False),
    )
    op.create_index("ix_table_rows_job_field", "table_rows", ["job_id", "field"])
