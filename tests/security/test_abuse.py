"""The abuse script, scaled down: every attack answered as documented, and
afterwards /health within 100 ms, RSS within 20 % of before, nothing
acknowledged lost (docs/security.md has the full-size run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_abuse_script_bounded_run(tmp_path: Path) -> None:
    out = tmp_path / "abuse.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "abuse.py"), "--scale", "0.06", "--json", str(out)],
        capture_output=True, text=True, timeout=200, cwd=tmp_path,
    )
    assert out.exists(), run.stdout + run.stderr
    rows = json.loads(out.read_text())
    failed = [row for row in rows if not row["ok"]]
    assert not failed, run.stdout
    assert run.returncode == 0
    attacks = " ".join(row["attack"] for row in rows)
    for name in ("slowloris", "idle connections", "waiting long polls", "Content-Length", "nested", "headers",
                 "UTF-8", "invalid tokens", "/health", "RSS", "acknowledged"):
        assert name in attacks, name
