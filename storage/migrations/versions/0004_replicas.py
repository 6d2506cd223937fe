"""Several servers on one store: a version and a runner per job, the servers and their leases.

``jobs.version`` is bumped by every change to a job or its results, ``jobs.last_seq`` is its
newest result number (filled in here from the results), ``jobs.runner`` the server running it.
The schema_version table of the stores made before Alembic goes.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("last_seq", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("runner", sa.String(128), nullable=True))
    op.execute("UPDATE jobs SET last_seq = COALESCE((SELECT MAX(seq) FROM results WHERE results.job_id = jobs.id), 0)")
    op.create_index("ix_jobs_runner", "jobs", ["runner"])
    op.create_table(
        "servers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("machine", sa.String(128), nullable=False),
        sa.Column("executor", sa.String(255), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("heartbeat", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
    )
    op.execute("DROP TABLE IF EXISTS schema_version")
