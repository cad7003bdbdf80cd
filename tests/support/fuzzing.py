"""A short coverage-guided run of one atheris harness of ``tests/fuzz`` (longer runs: run
the harness itself, see its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["short_fuzz_run"]

_TESTS = Path(__file__).resolve().parent.parent


def short_fuzz_run(harness: str, runs: int) -> None:
    """Run ``tests/fuzz/<harness>`` for at most ``runs`` inputs or 20 s; fail with its output
    unless it finished without a finding (skipped where atheris is not installed)."""
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, str(_TESTS / "fuzz" / harness), f"-runs={runs}", "-max_total_time=20", "-max_len=4096",
         "-timeout=10"],
        capture_output=True, text=True, timeout=120, cwd=_TESTS.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done " in proc.stderr
