"""The at-least-once check (scripts/alo_check.py) passes: 5,000 messages
through a consumer group of worker processes on PostgreSQL with random
worker kills and one owner kill; none lost, an accepted ack is final,
duplicates only after an expired lease."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storage.conftest import require

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "alo_check.py"


async def test_the_at_least_once_check_passes_under_worker_and_owner_kills() -> None:
    await require("postgres")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--messages", "5000"], capture_output=True, text=True, timeout=220
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, (report, result.stderr[-2000:])
    assert report["sent"] >= 5000 and report["lost"] == 0 and report["group_lag_and_pending_zero"]
    assert report["owner_killed"] and report["workers_killed"] >= 1
    assert report["redelivered_after_ack"] == 0 and report["unexplained_duplicates"] == 0
    assert report["duplicates"] == report["duplicates_after_an_expired_lease"]
