"""Per-user task counts kept by triggers, an index for every list order, conventional names.

- `task_count` holds each user's number of tasks and of completed ones. Triggers on `task` keep
  it in step within the statement that writes the task, so `X-Total-Count` stays exact and
  costs one row read instead of counting every matching task.
- Each list order (created, updated, title; pending/completed by creation) gets an index led
  by the owner, so pages are read in index order and never sorted.
- On PostgreSQL the primary keys and the email constraint take the names of the metadata's
  naming convention (`pk_task`, `uq_users_email`, ...), so later migrations can name them; on
  SQLite, where names live in a table's SQL, the users table is rebuilt for its email one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIST_INDEXES = {
    "ix_task_user_completed_created": ["user_id", "completed", "created_at", "id"],
    "ix_task_user_updated": ["user_id", "updated_at", "id"],
    "ix_task_user_title": ["user_id", "title", "id"],
}
POSTGRES_NAMES = [  # (table, PostgreSQL's default name, the convention's name)
    ("task", "task_pkey", "pk_task"),
    ("users", "users_pkey", "pk_users"),
    ("users", "users_email_key", "uq_users_email"),
    ("revoked_token", "revoked_token_pkey", "pk_revoked_token"),
]

# Inserts and deletes are counted per statement (transition tables), so a bulk import or a bulk
# delete updates each user's count row once, not once per task. Completion changes are counted
# per row, and only when `completed` changes (PostgreSQL allows no transition tables with a
# column list, and a whole-table trigger would run on every edit).
POSTGRES_TRIGGERS = [
    """
    CREATE FUNCTION task_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO task_count AS c (user_id, total, completed)
        SELECT user_id, COUNT(*), COUNT(*) FILTER (WHERE completed) FROM new_rows GROUP BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET total = c.total + EXCLUDED.total, completed = c.completed + EXCLUDED.completed;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION task_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE task_count AS c SET total = c.total - d.total, completed = c.completed - d.completed
        FROM (
            SELECT user_id, COUNT(*) AS total, COUNT(*) FILTER (WHERE completed) AS completed
            FROM old_rows GROUP BY user_id
        ) AS d
        WHERE c.user_id = d.user_id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION task_count_completed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE task_count SET completed = completed + NEW.completed::int - OLD.completed::int
        WHERE user_id = NEW.user_id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER task_count_on_insert AFTER INSERT ON task REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_count_inserted()
    """,
    """
    CREATE TRIGGER task_count_on_delete AFTER DELETE ON task REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_count_deleted()
    """,
    """
    CREATE TRIGGER task_count_on_complete AFTER UPDATE OF completed ON task
    FOR EACH ROW WHEN (OLD.completed IS DISTINCT FROM NEW.completed)
    EXECUTE FUNCTION task_count_completed()
    """,
]
POSTGRES_DROP = [
    "DROP TRIGGER task_count_on_complete ON task",
    "DROP TRIGGER task_count_on_delete ON task",
    "DROP TRIGGER task_count_on_insert ON task",
    "DROP FUNCTION task_count_completed()",
    "DROP FUNCTION task_count_deleted()",
    "DROP FUNCTION task_count_inserted()",
]

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER task_count_on_insert AFTER INSERT ON task BEGIN
        INSERT INTO task_count (user_id, total, completed) VALUES (NEW.user_id, 1, NEW.completed)
        ON CONFLICT (user_id) DO UPDATE
            SET total = total + 1, completed = completed + excluded.completed;
    END
    """,
    """
    CREATE TRIGGER task_count_on_delete AFTER DELETE ON task BEGIN
        UPDATE task_count SET total = total - 1, completed = completed - OLD.completed
        WHERE user_id = OLD.user_id;
    END
    """,
    """
    CREATE TRIGGER task_count_on_complete AFTER UPDATE OF completed ON task
    WHEN OLD.completed IS NOT NEW.completed BEGIN
        UPDATE task_count SET completed = completed + NEW.completed - OLD.completed
        WHERE user_id = NEW.user_id;
    END
    """,
]
SQLITE_DROP = [
    "DROP TRIGGER task_count_on_complete",
    "DROP TRIGGER task_count_on_delete",
    "DROP TRIGGER task_count_on_insert",
]

BACKFILL = """
    INSERT INTO task_count (user_id, total, completed)
    SELECT user_id, COUNT(*), SUM(CASE WHEN completed THEN 1 ELSE 0 END) FROM task GROUP BY user_id
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for table, old, new in POSTGRES_NAMES:
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")
    else:
        rename_sqlite_email_constraint("users_email_key", "uq_users_email")
    op.create_table(
        "task_count",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_task_count"),
    )
    if postgres:  # no write may slip in between the count and the triggers (SQLite: one writer)
        op.execute("LOCK TABLE task IN SHARE MODE")
    op.execute(BACKFILL)
    for statement in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)
    for name, columns in LIST_INDEXES.items():
        op.create_index(name, "task", columns)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in LIST_INDEXES:
        op.drop_index(name, table_name="task")
    for statement in POSTGRES_DROP if postgres else SQLITE_DROP:
        op.execute(statement)
    op.drop_table("task_count")
    if postgres:
        for table, old, new in POSTGRES_NAMES:
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {new} TO {old}")
    else:
        rename_sqlite_email_constraint("uq_users_email", "users_email_key")


def rename_sqlite_email_constraint(old: str, new: str) -> None:
    # Databases made before 0002 named it have it unnamed: the convention below names it `old`
    # on reflection, so both kinds are rebuilt alike.
    convention = {"uq": old}
    with op.batch_alter_table("users", recreate="always", naming_convention=convention) as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(new, ["email"])
