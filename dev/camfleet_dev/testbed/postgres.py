"""A real PostgreSQL (Debian's postgresql-15) on loopback, in a data directory of its own.

PostgreSQL refuses to run as root. As root (this machine, CI) the server runs as Debian's
``postgres`` system user through ``runuser``, with its data directory in a fresh folder owned by
that user (the session's temp dir is root-only, so it cannot live there); otherwise it runs as
the caller inside ``state_dir``. Logs go to ``state_dir/logs`` either way.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from camfleet_dev.testbed.process import ManagedProcess, free_port
from camfleet_dev.testbed.tools import SETUP_HINT, MissingTool

PG_VERSIONS = ("17", "16", "15")
SERVICE_USER = "postgres"
DATABASE = "camfleet"
USER = "camfleet"
PASSWORD = "camfleet"  # loopback test bed only


def pg_bin(name: str) -> str:
    """A PostgreSQL server program from Debian's versioned bin directory (not on PATH)."""
    for version in PG_VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise MissingTool(f"PostgreSQL's {name} is not installed (Debian's postgresql): {SETUP_HINT}")


class PostgresServer:
    """initdb once, then start/stop/kill on the same port with the same data.

    ``durable=False`` (the default for tests) turns fsync off: a killed *server* still loses
    nothing that was committed (the WAL is written at commit, the kernel keeps it), only a
    machine crash would. Benchmarks pass ``durable=True`` for PostgreSQL's defaults.
    """

    def __init__(self, state_dir: Path, *, port: int | None = None, durable: bool = False) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.durable = durable
        self.proc: ManagedProcess | None = None
        self._as_root = os.geteuid() == 0
        self._owned_tmp: Path | None = None
        self.data_dir = self._data_dir()

    @property
    def dsn(self) -> str:
        return self.dsn_of(DATABASE)

    def _data_dir(self) -> Path:
        if not self._as_root:
            return self.state_dir / "pgdata"
        marker = self.state_dir / "pgdata.path"
        if marker.is_file():
            existing = Path(marker.read_text().strip())
            if existing.is_dir():
                return existing
        self.state_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="camfleet-pg-"))
        self._owned_tmp = root
        user = pwd.getpwnam(SERVICE_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
        marker.write_text(str(root / "data"))
        return root / "data"

    def _as_service(self, argv: list[str]) -> list[str]:
        if not self._as_root:
            return argv
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError as exc:
            raise MissingTool(
                f"no '{SERVICE_USER}' user (Debian's postgresql): {SETUP_HINT}"
            ) from exc
        return ["runuser", "-u", SERVICE_USER, "--", *argv]

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        pwfile = self.data_dir.parent / "pwfile"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        result = subprocess.run(
            self._as_service(
                [
                    pg_bin("initdb"),
                    *("-D", str(self.data_dir), "-U", USER, "--pwfile", str(pwfile)),
                    *("--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C.UTF-8"),
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def start(self) -> None:
        """Start (or restart on the same port with the same data)."""
        self._initdb()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir.parent),
            "max_connections": "200",
            "shared_buffers": "256MB",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        self.proc = ManagedProcess(
            "postgres",
            self._as_service(
                [
                    pg_bin("postgres"),
                    *("-D", str(self.data_dir)),
                    *(arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")),
                ]
            ),
            log_dir=self.state_dir / "logs",
        )
        self.proc.start()
        self.proc.wait_until(self._ready, 60, "accepting connections")
        self._ensure_database()

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                pg_bin("psql"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database),
                *("-v", "ON_ERROR_STOP=1", "-tAq", "-c", sql),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env={**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "2"},
        )

    def _ready(self) -> bool:
        return self._psql("SELECT 1").returncode == 0

    def _ensure_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.stdout.strip() != "1":
            created = self._psql(f"CREATE DATABASE {DATABASE}")
            if created.returncode != 0:
                raise RuntimeError(f"CREATE DATABASE failed: {created.stderr}")

    def create_database(self, name: str) -> str:
        """A fresh, empty database (one per test keeps tests apart); its DSN."""
        created = self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        created = self._psql(f'CREATE DATABASE "{name}"')
        if created.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name} failed: {created.stderr}")
        return self.dsn_of(name)

    def dsn_of(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def sql(self, sql: str) -> str:
        """Run one statement in the camfleet database with psql; its unaligned output."""
        result = self._psql(sql, DATABASE)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        if self.proc is not None:
            self.proc.stop(timeout=30, sig=signal.SIGINT)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole server, as a crash would; the next start runs crash recovery."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
            # The whole process group is gone; its lock files would only block the restart.
            socket = self.data_dir.parent / f".s.PGSQL.{self.port}"
            for stale in (self.data_dir / "postmaster.pid", socket, Path(f"{socket}.lock")):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def remove(self) -> None:
        self.stop()
        if self._owned_tmp is not None:
            shutil.rmtree(self._owned_tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
