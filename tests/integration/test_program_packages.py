"""Each program's dependency set, installed alone in a fresh venv as its image installs it.

The images run `pip install . ./<program>` (the shared contracts, then the program). Doing the
same here, from the same pyproject files, catches a dependency a program imports but does not
declare (a broken pod for a user) and one it declares but must not carry (the operator with
PyAV, the gateway with kopf), without building the images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from camfleet_dev.testbed.tools import repo_root

ROOT = repo_root()
ALWAYS_ABSENT = {"camfleet-dev", "pytest", "playwright", "ruff", "mypy"}


@dataclass(frozen=True)
class Program:
    project: str  # the folder holding its pyproject.toml
    script: str  # its console script
    modules: tuple[str, ...]  # what its entry point imports
    absent: frozenset[str]  # distributions its image must not carry


PROGRAMS = {
    "operator": Program(
        "operator",
        "camfleet-operator",
        ("camfleet_operator.__main__", "camfleet_operator.reconcile", "camfleet_operator.webhook"),
        frozenset({"av", "numpy", "livekit", "redis", "camfleet-ingest", "camfleet-gateway"}),
    ),
    "gateway": Program(
        "overlay-gateway",
        "camfleet-gateway",
        ("overlay_gateway.__main__", "overlay_gateway.app", "overlay_gateway.routes"),
        frozenset({"av", "numpy", "livekit", "kopf", "camfleet-operator", "camfleet-ingest"}),
    ),
    "archiver": Program(
        "archiver",
        "camfleet-archiver",
        ("camfleet_archiver.main", "camfleet_archiver.archive", "camfleet_archiver.schema"),
        frozenset(
            {
                "av",
                "numpy",
                "livekit",
                "kopf",
                "camfleet-operator",
                "camfleet-ingest",
                "camfleet-gateway",
            }
        ),
    ),
    "ingest": Program(
        "ingest",
        "camfleet-ingest",
        # (its __main__ runs the program; the console script test below starts it)
        ("camfleet_ingest.main", "camfleet_ingest.publisher", "camfleet_ingest.transcode"),
        frozenset({"kopf", "redis", "kubernetes-asyncio", "camfleet-operator", "camfleet-gateway"}),
    ),
}


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def _context(program: Program, base: Path) -> Path:
    """What the program's Dockerfile copies (the contracts and the program), nothing else: the
    install below sees no other source, and builds nowhere in the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "node_modules", "web")
    context = base / "context"
    context.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src", ignore=ignore)
    shutil.copytree(ROOT / program.project, context / program.project, ignore=ignore)
    return context


def _install(name: str, program: Program, base: Path) -> Path:
    venv = base / name / "venv"
    context = _context(program, base / name)
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    # Not editable, in the same order as the program's Dockerfile.
    result = _run(
        venv / "bin" / "pip",
        "install",
        "--quiet",
        "--no-compile",
        "--disable-pip-version-check",
        context,
        context / program.project,
    )
    assert result.returncode == 0, f"{name}: pip install failed:\n{result.stderr[-3000:]}"
    return venv


@pytest.fixture(scope="session")
def program_venvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("program-venvs")
    with ThreadPoolExecutor(max_workers=len(PROGRAMS)) as pool:
        futures = {n: pool.submit(_install, n, p, base) for n, p in PROGRAMS.items()}
        yield {name: future.result() for name, future in futures.items()}


def _distributions(venv: Path) -> set[str]:
    listed = _run(venv / "bin" / "pip", "list", "--format", "json", "--disable-pip-version-check")
    assert listed.returncode == 0, listed.stderr
    return {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_imports_with_only_its_own_dependencies(
    name: str, program_venvs: dict[str, Path]
) -> None:
    program, venv = PROGRAMS[name], program_venvs[name]
    imported = _run(
        venv / "bin" / "python", "-c", "; ".join(f"import {m}" for m in program.modules)
    )
    assert imported.returncode == 0, f"{name}: {imported.stderr[-2000:]}"
    carried = _distributions(venv) & (program.absent | ALWAYS_ABSENT)
    assert not carried, f"the {name} image would carry {sorted(carried)}"


@pytest.mark.parametrize("name", ["operator", "ingest", "archiver"])
def test_console_script_starts_and_refuses_missing_settings(
    name: str, program_venvs: dict[str, Path]
) -> None:
    """The entry point runs (every import at start-up resolves) and, with no settings in the
    environment, exits 2 with a message instead of a traceback."""
    program, venv = PROGRAMS[name], program_venvs[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMFLEET_")}
    result = _run(venv / "bin" / program.script, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "invalid settings" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_development_cli_is_in_no_program(program_venvs: dict[str, Path]) -> None:
    for name, venv in program_venvs.items():
        assert not (venv / "bin" / "camfleet").exists(), f"`camfleet` installed with {name}"
        assert (venv / "bin" / PROGRAMS[name].script).exists()
