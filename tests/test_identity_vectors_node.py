"""Another language reproduces every identity vector we ship: a JavaScript implementation
(tests/node/identity_vectors.mjs, JSON.stringify + node's crypto) written from the files'
definitions computes each prompt_id, each sample rank and each sample from the vector files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "node" / "identity_vectors.mjs"
ID_FILE = ROOT / "schemas" / "prompt_id_vectors.json"
SAMPLE_FILE = ROOT / "schemas" / "sample_vectors.json"


@pytest.fixture(scope="module")
def from_node() -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript check of the identity vectors cannot run here")
    done = subprocess.run([node, str(SCRIPT), str(ID_FILE), str(SAMPLE_FILE)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_node_reproduces_every_prompt_id_vector_byte_for_byte(from_node):
    expected = json.loads(ID_FILE.read_text(encoding="utf-8"))["vectors"]
    assert len(from_node["vectors"]) == len(expected) >= 20
    for mine, theirs in zip(expected, from_node["vectors"], strict=True):
        assert theirs["hashed_text_utf8_hex"] == mine["hashed_text_utf8_hex"], mine["name"]
        assert theirs["prompt_id"] == mine["prompt_id"], mine["name"]


def test_node_refuses_what_the_definition_refuses(from_node):
    expected = json.loads(ID_FILE.read_text(encoding="utf-8"))["refused"]
    assert [r["name"] for r in from_node["refused"]] == [r["name"] for r in expected]
    assert all(r["refused"] for r in from_node["refused"]), [r for r in from_node["refused"] if not r["refused"]]
    assert [r["why"] for r in from_node["refused"]] == [r["reason"] for r in expected]


def test_node_reproduces_every_sample_rank_and_every_sample(from_node):
    doc = json.loads(SAMPLE_FILE.read_text(encoding="utf-8"))
    assert [r["rank"] for r in from_node["ranks"]] == [r["rank"] for r in doc["ranks"]]
    assert len(from_node["cases"]) == len(doc["cases"]) >= 5
    for mine, theirs in zip(doc["cases"], from_node["cases"], strict=True):
        assert theirs["prompt_ids"] == mine["prompt_ids"], mine["name"]
        assert theirs["ranks"] == mine["ranks"], mine["name"]
        assert theirs["sample_source_indices"] == mine["sample_source_indices"], mine["name"]
