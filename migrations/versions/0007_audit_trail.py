"""The audit trail: register, logins (and failed ones), logouts and task deletions.

One row per audited action in `audit_event`: when, what, who (a user id, an email, or both), a
short detail, for deletions how many tasks went and their ids, and from where (client address,
User-Agent, request id). Rows are written by the service in the same statement or transaction
as the write they record; nothing here depends on triggers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("detail", sa.String(length=100), nullable=True),
        sa.Column("deleted_count", sa.Integer(), nullable=True),
        sa.Column("task_ids", sa.Text(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_event"),
    )
    op.create_index("ix_audit_event_at", "audit_event", ["at"])
    op.create_index("ix_audit_event_user_at", "audit_event", ["user_id", "at"])
    op.create_index("ix_audit_event_email_at", "audit_event", ["email", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_event_email_at", table_name="audit_event")
    op.drop_index("ix_audit_event_user_at", table_name="audit_event")
    op.drop_index("ix_audit_event_at", table_name="audit_event")
    op.drop_table("audit_event")
