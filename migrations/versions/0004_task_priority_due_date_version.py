"""Task priority, due date (with an all-day flag) and version.

Existing tasks get priority 0 (none), no due date and version 1.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


COLUMNS = ("priority", "due_date", "all_day", "version")


# Plain ALTER TABLE on both backends, never a batch: SQLite's batch mode rebuilds the table, and
# a rebuilt table loses its triggers (the task counts of 0003).
def upgrade() -> None:
    op.add_column("task", sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="0"))
    op.add_column("task", sa.Column("due_date", sa.DateTime(timezone=True), nullable=True))
    op.add_column("task", sa.Column("all_day", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("task", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_task_user_due", "task", ["user_id", "due_date", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_user_due", table_name="task")
    for column in reversed(COLUMNS):
        op.execute(f"ALTER TABLE task DROP COLUMN {column}")
