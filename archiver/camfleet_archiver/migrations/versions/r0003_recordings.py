"""The recording index: one row per stored segment and one per gap (written by the ingest).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Capture times are timestamptz: microsecond resolution, exactly the frames' stamps. The
    # primary key is the ingest's idempotency key (a retried insert makes no second row) and
    # serves "one camera, a time range"; end_ts is included so a range scan never visits rows.
    op.execute(
        """
        CREATE TABLE recording_segments (
            camera       text        NOT NULL,
            start_ts     timestamptz NOT NULL,
            end_ts       timestamptz NOT NULL,
            first_frame  bigint      NOT NULL,
            frames       integer     NOT NULL,
            keyframes_us integer[]   NOT NULL,
            size         bigint      NOT NULL,
            object_key   text        NOT NULL,
            PRIMARY KEY (camera, start_ts) INCLUDE (end_ts),
            CHECK (end_ts > start_ts)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE recording_gaps (
            camera   text        NOT NULL,
            start_ts timestamptz NOT NULL,
            end_ts   timestamptz NOT NULL,
            reason   text        NOT NULL,
            PRIMARY KEY (camera, start_ts),
            CHECK (end_ts > start_ts)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE recording_gaps")
    op.execute("DROP TABLE recording_segments")
