"""What a new user sees when a node cannot start: one line naming the fix.

The "not installed" cases run a real interpreter in which the package (or
its database driver) cannot be imported, the way a fresh machine is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# Makes `import asyncpg` fail in the interpreter that loads it, as on a
# machine where the postgres extra was never installed.
HIDE_ASYNCPG = '''
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "asyncpg" or name.startswith("asyncpg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Hide())
'''


def _python_wrapper(tmp_path: Path, *flags: str, env_path: Path | None = None) -> Path:
    wrapper = tmp_path / "python"
    pythonpath = f'PYTHONPATH="{env_path}" ' if env_path else ""
    wrapper.write_text(f'#!/bin/sh\n{pythonpath}exec "{sys.executable}" {" ".join(flags)} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "IPUBSUB_RUN_DIR": env.pop("run_dir", "/nonexistent"), **env})


def test_shipped_configs_pass_the_dry_run() -> None:
    for i in (1, 2, 3):
        result = _run([sys.executable, "-m", "ipubsub", "serve", "--config", f"config/multi-node-{i}.yaml", "--dry-run"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"ipubsub: configuration ok (node node-{i}, storage postgres)"


def test_a_missing_driver_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_ASYNCPG)
    python = _python_wrapper(tmp_path, env_path=site)
    result = _run([str(python), "-m", "ipubsub", "serve", "--config", "config/multi-node-1.yaml"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ipubsub: config error: storage.backend is postgres, but its driver asyncpg is not installed: "
        "pip install 'ipubsub[postgres]'"
    ]
    # run-cluster.sh checks the same before starting anything
    script = _run([str(ROOT / "scripts" / "run-cluster.sh"), "start"], PYTHON=str(python), run_dir=str(tmp_path / "run"))
    assert script.returncode == 1 and script.stdout == ""
    assert script.stderr.splitlines() == [
        f"run-cluster: node-1: config error: storage.backend is postgres, but its driver asyncpg is not "
        f"installed: pip install 'ipubsub[postgres]' (using {python})"
    ]
    assert not (tmp_path / "run").exists()


def test_run_cluster_says_when_ipubsub_is_not_installed(tmp_path: Path) -> None:
    python = _python_wrapper(tmp_path, "-I", "-S")  # no site-packages, no working directory on the path
    script = _run([str(ROOT / "scripts" / "run-cluster.sh"), "start"], PYTHON=str(python), run_dir=str(tmp_path / "run"))
    assert script.returncode == 1 and script.stdout == ""
    assert script.stderr.splitlines() == [
        f"run-cluster: {python} cannot import ipubsub; install it first: "
        "python3 -m venv .venv && .venv/bin/pip install '.[speed,postgres]'"
    ]
