"""What each side imports: a consumer install has no torch, a producer needs psycopg only
for prediction sets in Postgres, and a missing extra is a helpful ImportError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    script = f"BLOCKED = {list(blocked)!r}\n" + _BLOCKER + textwrap.dedent(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_without_torch_and_transformers_both_packages_import_and_the_callback_says_what_to_install():
    out = _run(
        """
        import consumer, producer
        from producer import Publisher, PublishReport, sample_dataset, load_prediction_set, PredictionRecorder
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
        import producer
        from producer import prediction_set_from_samples, sample_dataset, write_prediction_set_file, load_prediction_set
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
        import producer
        heavy = sorted(m for m in ("torch", "transformers", "psycopg") if m in sys.modules)
        import consumer
        print(heavy, "torch" in sys.modules, "transformers" in sys.modules)
        """
    )
    assert out.strip() == "[] False False"
