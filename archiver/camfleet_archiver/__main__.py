"""`python -m camfleet_archiver`: the same program as the `camfleet-archiver` command."""

from camfleet_archiver.main import run

raise SystemExit(run())
