"""What each side imports: a consumer install has no torch, a producer needs psycopg only
for prediction sets in Postgres, and a missing extra is a helpful ImportError."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_BLOCKER = """
import sys

class _Blocked:
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError("No module named %r (blocked by the test)" % name, name=name)
        return None

sys.meta_path.insert(0, _Blocked(BLOCKED))
"""


def _run(code: str, blocked: tuple[str, ...] = ()) -> str:
    """Run ``code`` in a fresh interpreter, outside the source tree: only what is installed
    (the editable install maps the ``predstream.*`` names to the folders) can be imported."""
    script = f"BLOCKED = {list(blocked)!r}\n" + _BLOCKER + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as elsewhere:
        proc = subprocess.run(
            [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_without_torch_and_transformers_both_packages_import_and_the_callback_says_what_to_install():
    out = _run(
        """
        from predstream import consumer, producer
        from predstream.producer import (Publisher, PublishReport, sample_dataset, load_prediction_set,
                                         PredictionRecorder)
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        assert sample_dataset([{"prompt": "a"}, {"prompt": "b"}], 1, seed=0)[0].prompt in ("a", "b")
        for name in ("TrainingPredictionsCallback", "Generator"):
            try:
                getattr(producer, name)
            except ImportError as exc:
                assert "pip install 'predstream[train]'" in str(exc), exc
            else:
                raise AssertionError(name + " imported without torch")
        try:
            import predstream.tinymodel
        except ImportError as exc:
            assert "pip install 'predstream[train]'" in str(exc), exc
        else:
            raise AssertionError("tinymodel imported without torch")
        print("ok")
        """,
        blocked=("torch", "transformers"),
    )
    assert out.strip() == "ok"


def test_without_psycopg_the_producer_imports_and_reads_prediction_set_files(tmp_path):
    out = _run(
        f"""
        from predstream.producer import prediction_set_from_samples, sample_dataset, load_prediction_set
        from predstream.schemas import write_prediction_set_file
        assert "psycopg" not in sys.modules
        pset = prediction_set_from_samples("s", sample_dataset([{{"prompt": "a"}}], 1))
        write_prediction_set_file(pset, {str(tmp_path / "s.json")!r})
        assert [s.prompt for s in load_prediction_set({str(tmp_path / "s.json")!r})] == ["a"]
        print("ok")
        """,
        blocked=("psycopg", "psycopg_pool"),
    )
    assert out.strip() == "ok"


def test_importing_the_producer_loads_no_heavy_or_database_module_and_the_consumer_no_torch():
    out = _run(
        """
        import predstream.producer
        heavy = sorted(m for m in ("torch", "transformers", "psycopg") if m in sys.modules)
        import predstream.consumer
        print(heavy, "torch" in sys.modules, "transformers" in sys.modules)
        """
    )
    assert out.strip() == "[] False False"


def test_import_predstream_loads_no_torch_and_its_callback_says_what_to_install():
    out = _run(
        """
        import predstream
        assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules)
        assert "TrainingPredictionsCallback" in predstream.__all__ and "TrainingPredictionsCallback" in dir(predstream)
        try:
            from predstream import TrainingPredictionsCallback
        except ImportError as exc:
            assert "pip install 'predstream[train]'" in str(exc), exc
        else:
            raise AssertionError("TrainingPredictionsCallback imported without torch")
        from predstream import ConsumerSettings, Publisher
        import predstream.consumer
        assert ConsumerSettings is predstream.consumer.ConsumerSettings
        print("ok")
        """,
        blocked=("torch", "transformers"),
    )
    assert out.strip() == "ok"


def test_the_old_top_level_names_are_not_installed():
    out = _run(
        """
        import importlib.util
        import predstream.schemas, predstream.producer, predstream.consumer
        print([n for n in ("schemas", "producer", "consumer") if importlib.util.find_spec(n) is not None])
        """
    )
    assert out.strip() == "[]"


@pytest.mark.train
def test_the_training_callback_is_importable_from_predstream():
    import predstream
    from predstream.producer.callback import TrainingPredictionsCallback

    assert predstream.TrainingPredictionsCallback is TrainingPredictionsCallback


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_no_code_imports_the_old_top_level_names():
    """Library, CLI, tests and benchmarks import ``predstream.schemas`` (etc.), never ``schemas``."""
    old = []
    folders = ("schemas", "producer", "consumer", "predstream", "bench", "tests")
    for path in sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        old += [f"{path.relative_to(ROOT)}: {m}" for m in _imported_modules(path)
                if m.split(".")[0] in ("schemas", "producer", "consumer")]
    assert old == []


def test_the_cli_imports_the_library_only_through_the_package_faces():
    """Every name the CLI layer (predstream/*.py: the commands, the local stack, the demo, the
    report) takes from predstream.schemas/.producer/.consumer is imported from the package
    itself and listed in its ``__all__``."""
    import importlib

    wrong = []
    for path in sorted((ROOT / "predstream").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            parts = node.module.split(".")
            if parts[0] != "predstream" or len(parts) < 2 or parts[1] not in ("schemas", "producer", "consumer"):
                continue
            if len(parts) > 2:
                wrong.append(f"{path.name}: from {node.module} import ...")
                continue
            face = importlib.import_module(node.module)
            wrong += [f"{path.name}: {node.module}.{a.name} not in __all__" for a in node.names
                      if a.name not in face.__all__]
    assert wrong == []


def test_no_function_or_class_has_its_modules_name():
    """``from predstream.consumer import replay`` must never be ambiguous (module or function)."""
    shadowing = []
    for folder in ("schemas", "producer", "consumer", "predstream"):
        for path in sorted((ROOT / folder).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            shadowing += [f"{folder}/{path.name}: {node.name}" for node in tree.body
                          if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == path.stem]
    assert shadowing == []
