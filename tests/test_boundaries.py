"""The layers stay apart: every module's imports are read (ast), in whatever spelling.

* ``schemas/`` (the contract) imports nothing of predstream but itself: not the producer, not
  the consumer, not the CLI layer (``predstream/*.py``: the CLI, the local stack, the demo).
* ``producer/`` and ``consumer/`` import ``predstream.schemas`` and themselves, never each
  other, and not the CLI layer either (except the one lazy lookup listed in ``ALLOWED``).

An import counts wherever it is (module level or inside a function) and however it is
spelled: ``import predstream.consumer.sink``, ``from predstream import consumer``, a relative
import reaching out of its package (``from ..consumer import sink``), the old top-level names
(``consumer``, ``producer``, ``schemas``), ``importlib.import_module("...")``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: source folder -> the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"schemas": "predstream.schemas", "producer": "predstream.producer", "consumer": "predstream.consumer",
            "predstream": "predstream"}
#: layer -> the layers it may import
MAY_IMPORT = {
    "schemas": {"schemas"},
    "producer": {"schemas", "producer"},
    "consumer": {"schemas", "consumer"},
}
#: (module file, imported module) -> why it may cross; such an import must be lazy (in a function)
ALLOWED = {
    ("producer/callback.py", "predstream.local"):
        "the documented lazy local-stack lookup: without settings=, TrainingPredictionsCallback builds "
        "them as the CLI does (settings_with_local_stack); predstream.local imports no CLI and the consumer "
        "only inside up() (see its docstring)",
}


def _module_name(path: str) -> str:
    """``producer/callback.py`` -> ``predstream.producer.callback`` (``__init__`` -> the package)."""
    folder, _, rest = path.partition("/")
    parts = [PACKAGES[folder], *rest.removesuffix(".py").split("/")]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(name: str) -> str | None:
    """The layer a module name belongs to (``None``: not predstream's)."""
    head = name.split(".")
    if head[0] in ("schemas", "producer", "consumer"):  # the names 0.1 installed
        return head[0]
    if head[0] != "predstream":
        return None
    if len(head) > 1 and head[1] in ("schemas", "producer", "consumer"):
        return head[1]
    return "cli"  # predstream itself and its own modules: the CLI, the local stack, the demo


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(tree: ast.Module, importer: str, is_package: bool) -> Iterable[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in ``tree``."""
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, (ast.If, ast.Try)) for n in ast.walk(node)}
    for node in ast.walk(tree):
        eager = id(node) in top_level
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, eager
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, importer, is_package)
            for alias in node.names:  # `from predstream import consumer` imports predstream.consumer
                yield f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno, eager
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            name = node.args[0].value
            if name.startswith("."):  # import_module(".x", __name__)
                dots = len(name) - len(name.lstrip("."))
                name = _resolve(name[dots:] or None, dots, importer, is_package)
            yield name, node.lineno, eager


def boundary_violations(modules: Iterable[tuple[str, str]]) -> list[str]:
    """``path: line imports X (layer A may not import layer B)`` for each crossing in
    ``modules`` (``(path relative to the repository, source text)``)."""
    found = []
    for path, source in modules:
        layer = path.split("/")[0]
        if layer not in MAY_IMPORT:
            continue
        importer = _module_name(path)
        for name, line, eager in _imports(ast.parse(source, path), importer, path.endswith("__init__.py")):
            target = _layer(name)
            if target is None or target in MAY_IMPORT[layer]:
                continue
            allowed = next((why for (where, what), why in ALLOWED.items()
                            if where == path and (name == what or name.startswith(what + "."))), None)
            if allowed and not eager:
                continue
            how = " at import time (allowed only lazily, inside a function)" if allowed else ""
            found.append(f"{path}:{line} imports {name}{how}: {layer} may not import {target}")
    return found


def _library() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
            for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))]


def test_producer_and_consumer_never_import_each_other_and_schemas_imports_neither():
    modules = _library()
    assert {p.split("/")[0] for p, _ in modules} >= set(MAY_IMPORT)  # the guard reads the real folders
    assert boundary_violations(modules) == []


def test_every_allowed_crossing_still_exists():
    """An exception nobody needs any more is removed, not kept around."""
    sources = dict(_library())
    for path, name in ALLOWED:
        tree = ast.parse(sources[path])
        names = {n for n, _, _ in _imports(tree, _module_name(path), path.endswith("__init__.py"))}
        assert any(n == name or n.startswith(name + ".") for n in names), \
            f"{path} no longer imports {name}: drop it from ALLOWED"


@pytest.mark.parametrize("path, source", [
    ("producer/x.py", "import predstream.consumer.sink\n"),
    ("producer/x.py", "from predstream.consumer import ConsumerSettings\n"),
    ("producer/x.py", "from predstream import consumer\n"),
    ("producer/x.py", "from ..consumer import sink\n"),
    ("producer/x.py", "from .. import consumer\n"),
    ("producer/sub/x.py", "from ...consumer.sink import PostgresSink\n"),
    ("producer/x.py", "import consumer\n"),
    ("producer/x.py", "def f():\n    from predstream.consumer.sink import PostgresSink\n"),
    ("producer/x.py", "import importlib\nimportlib.import_module('predstream.consumer')\n"),
    ("producer/__init__.py", "from importlib import import_module\nimport_module('..consumer', __name__)\n"),
    ("consumer/x.py", "from predstream.producer import Publisher\n"),
    ("consumer/x.py", "from ..producer.publisher import Publisher\n"),
    ("consumer/x.py", "import producer.publisher\n"),
    ("consumer/x.py", "from predstream import TrainingPredictionsCallback\n"),
    ("consumer/x.py", "from predstream.cli import app\n"),
    ("schemas/x.py", "from predstream.consumer.settings import ConsumerSettings\n"),
    ("schemas/x.py", "from ..producer import Sample\n"),
    ("schemas/x.py", "from predstream.local import local_stack\n"),
    ("schemas/x.py", "import predstream._cli_common\n"),
    ("schemas/x.py", "from predstream import cli_sets\n"),
    ("producer/callback.py", "from predstream.local import settings_with_local_stack\n"),  # allowed only lazily
    ("producer/spool.py", "def f():\n    from predstream.local import local_stack\n"),  # allowed in callback.py only
])
def test_a_module_that_crosses_a_boundary_is_caught(path, source):
    found = boundary_violations([(path, source)])
    assert len(found) == 1 and found[0].startswith(f"{path}:"), found


@pytest.mark.parametrize("path, source", [
    ("producer/x.py", "from predstream.schemas import PredictionEvent\nfrom .sampler import Sample\n"),
    ("producer/x.py", "from ..schemas.codec import Decoder\nimport confluent_kafka\n"),
    ("consumer/x.py", "from . import sink\nfrom predstream import schemas\n"),
    ("schemas/x.py", "from .event import PredictionEvent\nimport json\n"),
    ("producer/callback.py", "def f():\n    from predstream.local import settings_with_local_stack\n"),
    ("producer/__init__.py", "from importlib import import_module\nimport_module('.generator', __name__)\n"),
])
def test_imports_within_the_rules_pass(path, source):
    assert boundary_violations([(path, source)]) == []
