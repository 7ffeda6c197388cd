"""`python -m camfleet_ingest`: the same program as the `camfleet-ingest` command."""

from camfleet_ingest.main import run

raise SystemExit(run())
