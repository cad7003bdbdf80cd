"""Guardrails CI runs with the tests: ruff over the whole repository, ``mypy --strict`` over the
folders that are typed (``MYPY_TARGETS``). Both run as subprocesses from this environment
(the ``dev`` extra installs them) with the configuration in pyproject.toml, and a failure
shows their output.

mypy checks the code under the names it is installed as: each folder appears where it
installs (``schemas/`` as ``predstream/schemas``, ...) in a tree of links under
``.mypy_cache/``, built from ``[tool.setuptools.package-dir]``, so ``from predstream.schemas
import ...`` resolves to the source tree (an editable install's import hook is invisible to
mypy). Its messages name the source files again (``schemas/codec.py:12: error: ...``).
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
BIN = Path(sys.executable).parent

#: Source folders ``mypy --strict`` checks (as listed in ``[tool.setuptools.package-dir]``;
#: ``predstream`` means the CLI, the local stack, the demo, the report, tinymodel and the web
#: view, not the packages installed inside it from other folders): all of them, every module.
MYPY_TARGETS = ["schemas", "producer", "consumer", "predstream"]

pytestmark = pytest.mark.timeout(600)


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN.parent}: pip install -e '.[dev]'")
    return str(path)


def _package_dirs() -> dict[str, Path]:
    """Installed package name -> source folder, as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: ROOT / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def test_ruff_finds_nothing_in_the_library_tests_and_benchmarks():
    proc = subprocess.run([_tool("ruff"), "check", "--no-fix", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"ruff check . found problems:\n{proc.stdout}{proc.stderr}"


def _link_tree(view: Path, packages: dict[str, Path]) -> dict[Path, list[Path]]:
    """Links under ``view`` that put each source folder where it installs; returns, per source
    folder, the paths to hand to mypy (a package's folder, or the top package's own modules)."""
    if view.exists():
        shutil.rmtree(view)
    top = {name for name in packages if "." not in name}
    assert top == {"predstream"}, f"one top-level package expected, pyproject.toml has {sorted(top)}"
    root = view / "predstream"
    root.mkdir(parents=True)
    targets: dict[Path, list[Path]] = {}
    for name, source in packages.items():
        if name == "predstream":  # its own modules and the packages in its folder (predstream/web);
            # the subpackages package-dir maps elsewhere (schemas/, ...) are linked below
            for module in sorted(source.glob("*.py")):
                os.symlink(module, root / module.name)
            inside = sorted(d for d in source.iterdir() if (d / "__init__.py").is_file())
            for package in inside:
                os.symlink(package, root / package.name, target_is_directory=True)
            targets[source] = sorted(root.glob("*.py")) + [root / d.name for d in inside]
        else:
            link = view.joinpath(*name.split("."))
            os.symlink(source, link, target_is_directory=True)
            targets[source] = [link]
    return targets


def _mypy(targets: list[Path], packages: dict[str, Path], work: Path) -> subprocess.CompletedProcess[str]:
    """mypy over the source folders ``targets``, seen as ``packages`` install them; the tree of
    links and mypy's cache live in ``work``."""
    unknown = [t for t in targets if t not in packages.values()]
    assert not unknown, f"not a package folder of pyproject.toml: {unknown}"
    view = work / "installed-layout"
    paths = _link_tree(view, packages)
    proc = subprocess.run(
        [_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(work),
         *(str(p.relative_to(view)) for t in targets for p in paths[t])],
        cwd=view, capture_output=True, text=True, timeout=540,
    )
    # name the source files, not the links: predstream/schemas/x.py -> schemas/x.py
    renames = sorted(((name.replace(".", "/") + "/", _shown(folder) + "/") for name, folder in packages.items()
                      if name != "predstream"), key=lambda r: -len(r[0]))
    lines = []
    for line in (proc.stdout + proc.stderr).splitlines():
        for installed, folder in renames:
            if line.startswith(installed):
                line = folder + line[len(installed):]
                break
        lines.append(line)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "\n".join(lines), "")


def _shown(folder: Path) -> str:
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)


@pytest.mark.slow  # a minute or two with an empty .mypy_cache (a fresh clone), seconds after
def test_mypy_strict_passes_over_the_typed_folders():
    proc = _mypy([ROOT / t for t in MYPY_TARGETS], _package_dirs(), ROOT / ".mypy_cache")
    assert proc.returncode == 0, f"mypy --strict over {', '.join(MYPY_TARGETS)}:\n{proc.stdout}"


@pytest.mark.slow
def test_the_mypy_check_can_fail_and_names_the_source_file(tmp_path):
    """The guard is not vacuous: a badly typed module in a checked folder is reported, by its
    path in the source tree (a folder of its own here, installed as predstream.probe)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "__init__.py").write_text("", encoding="utf-8")
    (probe / "halves.py").write_text("def half(x: int) -> int:\n    return x / 2\n", encoding="utf-8")
    packages = {**_package_dirs(), "predstream.probe": probe}
    proc = _mypy([probe], packages, tmp_path / "mypy")
    assert proc.returncode == 1, proc.stdout
    assert f"{probe}/halves.py:2: error: Incompatible return value type" in proc.stdout, proc.stdout
