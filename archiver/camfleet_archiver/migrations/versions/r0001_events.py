"""The events table: one row per Redis Stream entry, partitioned by capture day.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key is the idempotency key: a stream entry (camera + entry id) always carries
    # the same ts, so (camera, ts, entry id) is unique exactly when (camera, entry id) is, and a
    # partitioned table's unique keys must contain the partition key (ts). Its btree also
    # serves "one camera, a time range" in either direction; with the labels included, the
    # timeline (counts per label) and a label filter read the index, not the rows (an
    # index-only scan once autovacuum has marked the pages all-visible).
    op.execute(
        """
        CREATE TABLE events (
            camera     text        NOT NULL,
            ts         timestamptz NOT NULL,
            entry_ms   bigint      NOT NULL,
            entry_seq  integer     NOT NULL,
            frame      bigint,
            source     text        NOT NULL,
            labels     text[]      NOT NULL,
            objects    jsonb       NOT NULL,
            attributes jsonb,
            PRIMARY KEY (camera, ts, entry_ms, entry_seq) INCLUDE (labels)
        ) PARTITION BY RANGE (ts)
        """
    )
    # "When was a person seen this week": a rare label over a long range is a bitmap AND of
    # this index with the primary key's camera/ts range.
    op.execute("CREATE INDEX events_labels ON events USING gin (labels)")


def downgrade() -> None:
    op.execute("DROP TABLE events")
