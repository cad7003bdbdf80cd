"""The built wheel installs one top-level name, ``predstream``, and carries its data files.

The wheel is built from a copy of the source tree with setuptools' PEP 517 backend (no
network, no build isolation), then unpacked and imported from outside the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("schemas", "producer", "consumer", "predstream", "migrations"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", build, str(out)], cwd=src, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / proc.stdout.strip().splitlines()[-1]


def test_the_wheel_installs_predstream_as_its_only_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info, data = "predstream-0.1.0.dist-info", "predstream-0.1.0.data"
    assert {n.split("/")[0] for n in names} == {"predstream", dist_info, data}
    assert {n.split("/")[1] for n in names if n.startswith("predstream/")} >= {"schemas", "producer", "consumer",
                                                                               "cli.py"}
    # the only data files: the SQL migrations, installed under <prefix>/share/predstream/migrations
    data_files = [n for n in names if n.startswith(data + "/")]
    sql = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert sorted(n.rsplit("/", 1)[1] for n in data_files) == sql
    assert all(n.startswith(f"{data}/data/share/predstream/migrations/") for n in data_files)
    top_level = f"{dist_info}/top_level.txt"
    if top_level in names:
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["predstream"]


def test_the_wheel_carries_the_schemas_and_the_test_vectors(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"predstream/schemas/avro/{p.name}" for p in (ROOT / "schemas" / "avro").glob("*.avsc")}
    shipped |= {f"predstream/schemas/{p.name}" for p in (ROOT / "schemas").glob("*.json")}
    assert len(shipped) >= 5 and shipped <= names


def test_the_unpacked_wheel_imports_and_reads_its_data_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = """
import json, sys
from importlib import resources
import predstream.schemas, predstream.producer, predstream.consumer
from predstream.cli import app
from predstream.schemas import load_schema, SCHEMA_VERSIONS
faces = (predstream.schemas, predstream.producer, predstream.consumer)
assert all(m.__file__.startswith(sys.argv[1]) for m in faces), predstream.schemas.__file__
assert [load_schema(v)["name"] for v in SCHEMA_VERSIONS]
for name in ("prompt_id_vectors.json", "sample_vectors.json"):
    assert json.loads(resources.files("predstream.schemas").joinpath(name).read_text(encoding="utf-8"))
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_the_dockerfile_copies_every_folder_the_package_installs() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = set(config["package-dir"].values()) | {"migrations"}
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert folders <= copied
