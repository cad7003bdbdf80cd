"""The README's custom-loop snippet, run as it is written (settings from the environment).
Run by ``test_journeys_newuser.py``: ``python newuser_loop.py`` (any working folder)."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

_README = Path(__file__).resolve().parents[2] / "README.md"


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from predstream.tinymodel import addition_rows, build_model, build_tokenizer

    snippet = next(b for b in re.findall(r"```python\n(.*?)```", _README.read_text(), flags=re.S)
                   if "PredictionRecorder(" in b)
    tokenizer = build_tokenizer()
    scope = {"eval_rows": addition_rows(40, seed=5), "model": build_model(tokenizer), "tokenizer": tokenizer}
    exec(compile(snippet, "README", "exec"), scope)


if __name__ == "__main__":
    main()
