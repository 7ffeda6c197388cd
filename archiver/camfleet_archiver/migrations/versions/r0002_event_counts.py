"""The timeline's rollup: counts per camera, 10-second bucket and label, kept by the archiver.

Revision ID: 0002
Revises: 0001

Counting a camera-hour's labels from the events themselves reads ~36,000 rows at 10 events/s
(~100 ms); the rollup holds at most 360 rows per label for it. The archiver adds to it in the
same transaction as the rows it counts, only for rows that were new, so the counts stay exact
under redelivery. Partitioned by day like the events, so retention drops both together.
Existing events are counted into it here, once.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_counts (
            camera text        NOT NULL,
            bucket timestamptz NOT NULL,
            label  text        NOT NULL,
            count  integer     NOT NULL,
            PRIMARY KEY (camera, bucket, label)
        ) PARTITION BY RANGE (bucket)
        """
    )
    # One rollup partition per existing events partition, same bounds.
    op.execute(
        """
        DO $$
        DECLARE p record;
        BEGIN
          FOR p IN
            SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'events'::regclass
          LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF event_counts %s',
                           replace(p.name, 'events_p', 'event_counts_p'), p.bound);
          END LOOP;
        END $$
        """
    )
    op.execute(
        """
        INSERT INTO event_counts (camera, bucket, label, count)
        SELECT camera, date_bin('10 seconds', ts, timestamptz '1970-01-01 00:00:00+00'), l,
               count(*)
        FROM events, unnest(labels) AS l
        GROUP BY 1, 2, 3
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE event_counts")
