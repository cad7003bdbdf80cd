"""``mypy --strict`` over the producer and the consumer: any error fails the test, with mypy's output.

mypy checks the code under the names it is installed as: each folder appears where it
installs (``consumer/`` as ``predstream/consumer``, ...) in a tree of links under
``.mypy_cache/``, built from ``[tool.setuptools.package-dir]``, so ``from predstream.schemas
import ...`` resolves to the source tree (an editable install's import hook is invisible to
mypy). Its messages name the source files again (``consumer/worker.py:12: error: ...``). The
configuration is ``[tool.mypy]`` in pyproject.toml; consumer/sink.py is excluded there (with
the reason).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Source folders checked with ``mypy --strict``.
MYPY_TARGETS = ["consumer", "producer"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _package_dirs() -> dict[str, Path]:
    """Installed package name -> source folder, as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: ROOT / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def _installed_layout(view: Path, packages: dict[str, Path]) -> dict[Path, Path]:
    """Links under ``view`` that put each package folder where it installs; returns source
    folder -> its link."""
    if view.exists():
        shutil.rmtree(view)
    (view / "predstream").mkdir(parents=True)
    links: dict[Path, Path] = {}
    for name, source in packages.items():
        if name == "predstream":  # the top package's own modules; its subpackages live elsewhere
            for module in source.glob("*.py"):
                os.symlink(module, view / "predstream" / module.name)
            continue
        link = view.joinpath(*name.split("."))
        os.symlink(source, link, target_is_directory=True)
        links[source] = link
    return links


def _mypy(targets: list[Path], packages: dict[str, Path], work: Path) -> tuple[int, str]:
    mypy = Path(sys.executable).parent / "mypy"
    if not mypy.exists():
        pytest.fail(f"mypy is not installed in {mypy.parent.parent}: pip install -e '.[dev]'")
    view = work / "installed-layout"
    links = _installed_layout(view, packages)
    proc = subprocess.run(
        [str(mypy), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(work),
         *(str(links[t].relative_to(view)) for t in targets)],
        cwd=view, capture_output=True, text=True, timeout=540,
    )
    output = proc.stdout + proc.stderr
    for source, link in sorted(links.items(), key=lambda item: -len(str(item[1]))):
        shown = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source)
        output = output.replace(str(link.relative_to(view)) + "/", shown + "/")
    return proc.returncode, output


def test_mypy_strict_passes_over_the_producer_and_the_consumer():
    code, output = _mypy([ROOT / t for t in MYPY_TARGETS], _package_dirs(), ROOT / ".mypy_cache")
    assert code == 0, f"mypy --strict over {', '.join(MYPY_TARGETS)}:\n{output}"


def test_the_typecheck_can_fail_and_names_the_source_file(tmp_path):
    """Not vacuous: a badly typed module in a checked folder is reported by its source path."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "__init__.py").write_text("", encoding="utf-8")
    (probe / "halves.py").write_text("def half(x: int) -> int:\n    return x / 2\n", encoding="utf-8")
    code, output = _mypy([probe], {**_package_dirs(), "predstream.probe": probe}, tmp_path / "mypy")
    assert code == 1, output
    assert f"{probe}/halves.py:2: error: Incompatible return value type" in output, output
