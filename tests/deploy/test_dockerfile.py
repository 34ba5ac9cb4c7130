"""The Dockerfile, checked without a container engine (none runs here).

The Dockerfile is read with BuildKit's own parser (PyPI ``dockerfile``), the
build context is what .dockerignore lets through (matched as Docker does),
the build stage's COPY steps are replayed into a directory and the wheel is
built from it with the same pip command the README's install amounts to:
it must be the wheel built from the repository itself.  The image's config
file and its HEALTHCHECK command are run against a real node.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.http import http_json
from tests.support.procs import READY_TIMEOUT
from tests.support.wait import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


# -- reading the Dockerfile and .dockerignore ---------------------------------------------


def instructions() -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="pip install -e '.[test]' (PyPI dockerfile)")
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def stages() -> dict[str, list[Any]]:
    """Instructions per stage name (``FROM image AS name``)."""
    out: dict[str, list[Any]] = {}
    current: list[Any] | None = None
    for cmd in instructions():
        if cmd.cmd == "FROM":
            current = out.setdefault(cmd.value[-1] if len(cmd.value) == 3 else f"stage{len(out)}", [])
        if current is not None:
            current.append(cmd)
    return out


def build_args() -> dict[str, str]:
    args = {}
    for cmd in instructions():
        if cmd.cmd == "ARG" and "=" in cmd.value[0]:
            name, value = cmd.value[0].split("=", 1)
            args[name] = value
    return args


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker's matcher reads it: ``**`` any
    number of directories, ``*`` and ``?`` within one path element."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((exclusion, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a
    parent directory matches the path too."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    matched = False
    for exclusion, regex in rules:
        if exclusion != matched:
            continue
        if any(regex.match(c) for c in candidates):
            matched = not exclusion
    return matched


def context_files() -> list[str]:
    """The build context: the repository's files that .dockerignore lets in."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    rules = dockerignore()
    return sorted(p for p in listed if (ROOT / p).is_file() and not ignored(p, rules))


# -- the checks ------------------------------------------------------------------------------


def test_dockerignore_matching_follows_docker() -> None:
    rules = [(False, _pattern_regex("*")), (True, _pattern_regex("ipubsub")),
             (False, _pattern_regex("**/__pycache__"))]
    assert ignored("tests/x.py", rules) and ignored(".git/HEAD", rules)
    assert not ignored("ipubsub/node.py", rules)
    assert ignored("ipubsub/__pycache__/node.cpython-311.pyc", rules)
    assert ignored("a/b/c.txt", [(False, _pattern_regex("a/**/*.txt"))])


def test_the_build_context_holds_what_the_image_needs_and_nothing_else() -> None:
    files = context_files()
    assert "pyproject.toml" in files and "README.md" in files
    assert "deploy/config/ipubsub.yaml" in files
    assert "ipubsub/dashboard/static/index.html" in files and "ipubsub/api/openapi.json" in files
    tracked = subprocess.run(["git", "ls-files", "ipubsub"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert set(tracked) <= set(files)  # the whole package
    assert not [f for f in files if f.startswith(("tests/", "docs/", ".venv/", "scripts/", ".git/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_stages_base_images_user_port_healthcheck_and_entrypoint() -> None:
    by_stage = stages()
    assert list(by_stage) == ["build", "runtime"]  # multi-stage
    for name, cmds in by_stage.items():
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", cmds[0].value[0]), name
    assert re.fullmatch(r"3\.\d+", build_args()["PYTHON_VERSION"])
    runtime = by_stage["runtime"]
    kinds = [c.cmd for c in runtime]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    (expose,) = [c for c in runtime if c.cmd == "EXPOSE"]
    image_config = yaml.safe_load((ROOT / "deploy/config/ipubsub.yaml").read_text())
    assert expose.value == (image_config["node"]["listen"].rsplit(":", 1)[1],)
    (health,) = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    assert health.value[0] == "CMD" and "/health" in health.value[-1]
    (entry,) = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    (cmd,) = [c for c in runtime if c.cmd == "CMD"]
    assert entry.json and entry.value == ("ipubsub", "serve")  # exec form: the node is PID 1 and gets SIGTERM
    assert cmd.value == ("--config", "/etc/ipubsub/ipubsub.yaml")
    copies = {c.value[-1]: c.value[:-1] for c in runtime if c.cmd == "COPY"}
    assert copies["/etc/ipubsub/ipubsub.yaml"] == ("deploy/config/ipubsub.yaml",)
    assert [c.value[0] for c in runtime if c.cmd == "STOPSIGNAL"] == ["SIGTERM"]


def test_copy_sources_exist_in_the_context_and_extras_exist_in_pyproject() -> None:
    files = context_files()
    for stage, cmds in stages().items():
        for c in cmds:
            if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
                for source in c.value[:-1]:
                    assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), \
                        f"{stage}: COPY {source} matches nothing in the build context"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    chosen = build_args()["EXTRAS"].split(",")
    assert chosen and all(e in extras for e in chosen), chosen
    for extra in ("all",):  # the one the Dockerfile's comment offers
        assert extra in extras
    wheel_dirs = [re.search(r"--wheel-dir (\S+)", c.value[0]).group(1)  # type: ignore[union-attr]
                  for c in stages()["build"] if c.cmd == "RUN" and "pip wheel" in c.value[0]]
    (install,) = [c for c in stages()["runtime"] if c.cmd == "RUN" and "pip install" in c.value[0]]
    mount = dict(kv.split("=", 1) for kv in install.flags[0].removeprefix("--mount=").split(","))
    assert mount["from"] == "build" and mount["source"] == wheel_dirs[0]
    assert f"--find-links {mount['target']}" in install.value[0] and "--no-index" in install.value[0]
    assert '"ipubsub[${EXTRAS}]"' in install.value[0]


def _wheel(source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-w", str(out)], check=True, timeout=240,
                   capture_output=True)
    (wheel,) = out.glob("ipubsub-*.whl")
    return wheel


def _contents(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if not n.endswith("/RECORD")}


@pytest.mark.slow
def test_the_build_stage_builds_the_same_wheel_as_the_repository(tmp_path: Path) -> None:
    """Replay the build stage's COPY steps from the build context, then
    ``pip wheel``; compare with ``pip wheel . --no-deps`` of the repository."""
    context = tmp_path / "context"
    for name in context_files():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, context / name)
    workdir = tmp_path / "stage"
    workdir.mkdir()
    for c in stages()["build"]:
        if c.cmd != "COPY":
            continue
        *sources, dest = c.value
        for source in sources:
            target = workdir / dest if not dest.endswith("/") else workdir / dest / Path(source).name
            if (context / source).is_dir():
                shutil.copytree(context / source, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(context / source, target)
    staged = _contents(_wheel(workdir, tmp_path / "from-stage"))
    repo_copy = tmp_path / "repo"  # a clean copy: no build/ or egg-info of an editable install
    shutil.copytree(ROOT, repo_copy, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                                    "test-artifacts", "ipubsub-data", "__pycache__"))
    assert staged == _contents(_wheel(repo_copy, tmp_path / "from-repo"))
    names = set(staged)
    for needed in ("ipubsub/dashboard/static/index.html", "ipubsub/dashboard/static/dashboard.js",
                   "ipubsub/dashboard/static/dashboard.css", "ipubsub/api/openapi.json", "ipubsub/py.typed"):
        assert needed in names
    with zipfile.ZipFile(next((tmp_path / "from-stage").glob("*.whl"))) as z:
        entry_points = next(z.read(n).decode() for n in z.namelist() if n.endswith("entry_points.txt"))
    assert re.search(r"^ipubsub = ipubsub\.cli", entry_points, re.M)  # ENTRYPOINT ["ipubsub", ...]


@pytest.mark.slow
def test_the_image_config_and_healthcheck_on_a_real_node(tmp_path: Path) -> None:
    """``ipubsub serve --config deploy/config/ipubsub.yaml`` with the
    overrides a container gets; the HEALTHCHECK command as Docker runs it:
    exit 0 while serving, non-zero once the node is gone."""
    (health,) = [c for c in stages()["runtime"] if c.cmd == "HEALTHCHECK"]
    check = [sys.executable if health.value[1] == "python" else health.value[1], *health.value[2:]]
    ready = tmp_path / "ready.json"
    # Port 0: the node reports the port it got; the healthcheck then gets
    # IPUBSUB_NODE_LISTEN with that port, as in a container.
    env = dict(os.environ, IPUBSUB_NODE_LISTEN="127.0.0.1:0", IPUBSUB_NODE_NAME="ipubsub-0",
               IPUBSUB_STORAGE_SQLITE_PATH=str(tmp_path / "data.db"), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "node.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "ipubsub", "serve", "--config",
                             str(ROOT / "deploy/config/ipubsub.yaml"), "--ready-file", str(ready)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until_sync(lambda: ready.exists() or node.poll() is not None, READY_TIMEOUT, "the node serving")
        assert node.poll() is None, (tmp_path / "node.log").read_text()
        address = json.loads(ready.read_text())["http"]
        env["IPUBSUB_NODE_LISTEN"] = address
        status, body = http_json(f"http://{address}/health", timeout=10)
        assert status == 200 and body["node"] == "ipubsub-0" and body["storage"]["backend"] == "sqlite"
        assert subprocess.run(check, env=env, timeout=10).returncode == 0
        node.terminate()
        assert node.wait(30) == 0  # SIGTERM: graceful, exit 0
        assert subprocess.run(check, env=env, timeout=10, capture_output=True).returncode != 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5)
        log.close()
    assert (tmp_path / "data.db").exists()
