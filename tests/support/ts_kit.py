"""The TypeScript compiler for the tests: ``tests/ts`` pins it (package.json + package-lock.json);
:func:`typescript_compiler` runs ``npm ci`` there the first time (node_modules is gitignored),
once per machine however many test processes ask, and returns how to run ``tsc``."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["TS_DIR", "typescript_compiler", "run_tsc"]

TS_DIR = Path(__file__).resolve().parent.parent / "ts"
_TSC = TS_DIR / "node_modules" / "typescript" / "bin" / "tsc"


def _required() -> bool:
    """On CI, or with PREDSTREAM_REQUIRE_BROWSER=1, a missing Node/npm fails the test."""
    return bool(os.environ.get("CI")) or os.environ.get("PREDSTREAM_REQUIRE_BROWSER") == "1"


def typescript_compiler() -> list[str]:
    """``[node, tsc]``: install the pinned TypeScript with ``npm ci`` when it is not there.

    Without node or npm: fail on CI (or with PREDSTREAM_REQUIRE_BROWSER=1), skip elsewhere.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = "node" if node is None else "npm"
        message = f"{missing} is not installed: the TypeScript types cannot be compiled here (Node 20 with npm needed)"
        if _required():
            pytest.fail(message + " (required: CI or PREDSTREAM_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    with open(TS_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one `npm ci` at a time (test processes run side by side)
        if not _TSC.exists():
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TS_DIR,
                                  capture_output=True, text=True, timeout=300, check=False)
            if done.returncode != 0 or not _TSC.exists():
                pytest.fail(f"`npm ci` in {TS_DIR} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return [node, str(_TSC)]


def run_tsc(tsc: list[str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the compiler; its diagnostics are on stdout."""
    return subprocess.run([*tsc, *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
