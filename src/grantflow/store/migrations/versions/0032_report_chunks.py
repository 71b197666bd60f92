"""A report is stored in chunks of a megabyte (`report_chunks`), written as its rows are read,
and sent a chunk at a time; a large one is `generating` (`reports.status`, `reports.error`)
while the workers write it. A report was built whole in memory and stored as one value, so a
report of more than 100,000 rows was refused. Reports stored before keep their `content`.

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=20), nullable=False, server_default="ready")
        )
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("created_by_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=100), nullable=True))
        batch.alter_column("content", existing_type=sa.LargeBinary(), nullable=True)
    op.create_table(
        "report_chunks",
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_chunks_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "seq", name=op.f("pk_report_chunks")),
    )


def downgrade() -> None:
    # (a report stored in chunks has no content of one piece: those reports go with them)
    op.execute("DELETE FROM reports WHERE content IS NULL")
    op.drop_table("report_chunks")
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("content", existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column("request_id")
        batch.drop_column("created_by_id")
        batch.drop_column("error")
        batch.drop_column("status")
