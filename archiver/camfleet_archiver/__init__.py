"""camfleet's archiver: Redis Streams → PostgreSQL, one row per stream entry (docs/history.md)."""
