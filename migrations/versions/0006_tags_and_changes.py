"""Tags, a change sequence with tombstones for the sync feed, and a case-insensitive title order.

- `task.tags` holds a task's tags as a JSON array, in the order given, and is what reads return.
  `task_tag` holds one row per tag (lower-cased) for filtering through an index. Triggers keep
  it in step with `task.tags`, within the statement that writes the task.
- `task.change_seq` is set by triggers on every insert and update, and a deleted task leaves a
  `task_tombstone` with its own sequence number. Sequence numbers rise, per user, in the order
  the writes commit, so a feed read "after N" never misses a change: on PostgreSQL each write
  takes a per-user advisory lock (held to commit) before drawing from `task_change_seq`; on
  SQLite, which has a single writer, the next number is one past the user's highest.
  `task_count.purged_seq` records the highest sequence number of purged tombstones: a cursor
  older than it may have missed a deletion.
- The title order ignores case: `lower(title)` on PostgreSQL, `COLLATE NOCASE` on SQLite (a
  built-in collation, so the index stays valid whatever functions a connection defines).

- On SQLite the task table is rebuilt with AUTOINCREMENT (its indexes and triggers copied
  over), so the id of a deleted task is never given to a new one: a tombstone, an ETag or a
  client's copy can never be mistaken for another task. PostgreSQL's sequence never reuses ids.

Existing tasks get no tags and a sequence number each. Otherwise plain ALTER TABLE, never an
Alembic batch: a table it rebuilds loses its triggers. The downgrade keeps AUTOINCREMENT.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pg_advisory_xact_lock(CHANGE_LOCK, hashtext(user_id)): one lock space for the task changes.
CHANGE_LOCK = 7710

POSTGRES_UP = [
    "CREATE SEQUENCE task_change_seq",
    "UPDATE task SET change_seq = nextval('task_change_seq')",
    f"""
    CREATE FUNCTION task_change_next() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({CHANGE_LOCK}, hashtext(NEW.user_id));
        NEW.change_seq := nextval('task_change_seq');
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE FUNCTION task_tags_set() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM task_tag WHERE task_id = NEW.id;
        INSERT INTO task_tag (task_id, tag, user_id)
        SELECT NEW.id, lower(value), NEW.user_id FROM json_array_elements_text(NEW.tags::json)
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION task_tombstones_left() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({CHANGE_LOCK}, hashtext(user_id))
        FROM (SELECT DISTINCT user_id FROM old_rows) AS owners;
        INSERT INTO task_tombstone (task_id, user_id, deleted_at, change_seq)
        SELECT id, user_id, now(), nextval('task_change_seq') FROM old_rows ORDER BY id
        ON CONFLICT (task_id) DO UPDATE
            SET user_id = EXCLUDED.user_id, deleted_at = EXCLUDED.deleted_at,
                change_seq = EXCLUDED.change_seq;
        DELETE FROM task_tag USING old_rows WHERE task_tag.task_id = old_rows.id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER task_change_on_write BEFORE INSERT OR UPDATE ON task
    FOR EACH ROW EXECUTE FUNCTION task_change_next()
    """,
    """
    CREATE TRIGGER task_tags_on_insert AFTER INSERT ON task
    FOR EACH ROW WHEN (NEW.tags <> '[]') EXECUTE FUNCTION task_tags_set()
    """,
    """
    CREATE TRIGGER task_tags_on_update AFTER UPDATE OF tags ON task
    FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags) EXECUTE FUNCTION task_tags_set()
    """,
    # Named to fire before task_count_on_delete (same-event triggers fire in name order), so that
    # every write takes the user's change lock before the user's task_count row: no deadlock.
    """
    CREATE TRIGGER task_change_on_delete AFTER DELETE ON task REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_tombstones_left()
    """,
    "CREATE INDEX ix_task_user_title ON task (user_id, lower(title), id)",
]
POSTGRES_DOWN = [
    "DROP TRIGGER task_change_on_delete ON task",
    "DROP TRIGGER task_tags_on_update ON task",
    "DROP TRIGGER task_tags_on_insert ON task",
    "DROP TRIGGER task_change_on_write ON task",
    "DROP FUNCTION task_tombstones_left()",
    "DROP FUNCTION task_tags_set()",
    "DROP FUNCTION task_change_next()",
    "DROP SEQUENCE task_change_seq",
]


def sqlite_next(user: str, *also: str) -> str:
    """One past the highest sequence number the user's changes have had (SQLite: one writer)."""
    terms = [
        f"coalesce((SELECT max(change_seq) FROM task WHERE user_id = {user}), 0)",
        f"coalesce((SELECT max(change_seq) FROM task_tombstone WHERE user_id = {user}), 0)",
        f"coalesce((SELECT purged_seq FROM task_count WHERE user_id = {user}), 0)",
        *also,
    ]
    return f"1 + max({', '.join(terms)})"


SQLITE_TAGS = """
        INSERT OR IGNORE INTO task_tag (task_id, tag, user_id)
        SELECT NEW.id, lower(value), NEW.user_id FROM json_each(NEW.tags);
"""
SQLITE_UP = [
    "UPDATE task SET change_seq = id",
    f"""
    CREATE TRIGGER task_change_on_insert AFTER INSERT ON task BEGIN
        UPDATE task SET change_seq = {sqlite_next("NEW.user_id")} WHERE id = NEW.id;
        DELETE FROM task_tombstone WHERE task_id = NEW.id;
        {SQLITE_TAGS}
    END
    """,
    f"""
    CREATE TRIGGER task_change_on_update AFTER UPDATE ON task
    WHEN NEW.change_seq IS OLD.change_seq BEGIN
        UPDATE task SET change_seq = {sqlite_next("NEW.user_id")} WHERE id = NEW.id;
    END
    """,
    f"""
    CREATE TRIGGER task_tags_on_update AFTER UPDATE OF tags ON task
    WHEN NEW.tags IS NOT OLD.tags BEGIN
        DELETE FROM task_tag WHERE task_id = NEW.id;
        {SQLITE_TAGS}
    END
    """,
    # deleted_at in the text form UTCDateTime stores (microseconds, no offset).
    f"""
    CREATE TRIGGER task_change_on_delete AFTER DELETE ON task BEGIN
        INSERT OR REPLACE INTO task_tombstone (task_id, user_id, deleted_at, change_seq)
        VALUES (
            OLD.id, OLD.user_id, strftime('%Y-%m-%d %H:%M:%f000', 'now'),
            {sqlite_next("OLD.user_id", "OLD.change_seq")}
        );
        DELETE FROM task_tag WHERE task_id = OLD.id;
    END
    """,
    "CREATE INDEX ix_task_user_title ON task (user_id, title COLLATE NOCASE, id)",
]
SQLITE_DOWN = [
    "DROP TRIGGER task_change_on_delete",
    "DROP TRIGGER task_tags_on_update",
    "DROP TRIGGER task_change_on_update",
    "DROP TRIGGER task_change_on_insert",
]


def rebuild_sqlite_task_with_autoincrement() -> None:
    """Copy the task table into one declared AUTOINCREMENT, with the same indexes and triggers."""
    connection = op.get_bind()
    table_sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'task'"
    )
    ddl = table_sql.scalar_one()
    if "AUTOINCREMENT" in ddl:
        return
    extras = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master"
        " WHERE tbl_name = 'task' AND type IN ('index', 'trigger') AND sql IS NOT NULL"
    )
    others = extras.scalars().all()
    ddl, columns = re.subn(
        r"\bid INTEGER NOT NULL,", "id INTEGER NOT NULL CONSTRAINT pk_task PRIMARY KEY AUTOINCREMENT,", ddl
    )
    ddl, keys = re.subn(r",\s*CONSTRAINT \w+ PRIMARY KEY \(id\)", "", ddl)
    ddl, names = re.subn(r"^CREATE TABLE task \(", "CREATE TABLE task_rebuilt (", ddl)
    if (columns, keys, names) != (1, 1, 1):
        raise RuntimeError(f"unexpected task table: {ddl}")
    op.execute(ddl)
    op.execute("INSERT INTO task_rebuilt SELECT * FROM task")
    op.execute("DROP TABLE task")  # its triggers go first: the copy counts nothing twice
    op.execute("ALTER TABLE task_rebuilt RENAME TO task")
    for statement in others:
        op.execute(statement)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("task", sa.Column("tags", sa.Text(), nullable=False, server_default="[]"))
    op.add_column("task", sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0"))
    if not postgres:
        rebuild_sqlite_task_with_autoincrement()
    op.add_column("task_count", sa.Column("purged_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "task_tag",
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "tag", name="pk_task_tag"),
    )
    op.create_index("ix_task_tag_user_tag", "task_tag", ["user_id", "tag", "task_id"])
    op.create_table(
        "task_tombstone",
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_task_tombstone"),
    )
    op.create_index("ix_task_tombstone_user_change", "task_tombstone", ["user_id", "change_seq"])
    op.create_index("ix_task_tombstone_deleted_at", "task_tombstone", ["deleted_at"])
    op.drop_index("ix_task_user_title", table_name="task")
    for statement in POSTGRES_UP if postgres else SQLITE_UP:
        op.execute(statement)
    op.create_index("ix_task_user_change", "task", ["user_id", "change_seq"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_task_user_change", table_name="task")
    for statement in POSTGRES_DOWN if postgres else SQLITE_DOWN:
        op.execute(statement)
    op.drop_index("ix_task_user_title", table_name="task")
    op.create_index("ix_task_user_title", "task", ["user_id", "title", "id"])
    op.drop_table("task_tombstone")
    op.drop_table("task_tag")
    op.execute("ALTER TABLE task_count DROP COLUMN purged_seq")
    op.execute("ALTER TABLE task DROP COLUMN change_seq")
    op.execute("ALTER TABLE task DROP COLUMN tags")
