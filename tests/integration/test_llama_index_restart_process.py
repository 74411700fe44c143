"""A new process loads the indexes this process built in a cube and gives the same answers. (The build
runs here, with the session's embedder: a second child process only repeated ~3 s of imports and a
model load.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

UNIT = Path(__file__).resolve().parent.parent / "unit"
SCRIPT = """
import json, sys
sys.path.insert(0, {unit!r})
from memos_integrations import MemCube
from test_llama_index_restart import answers
with MemCube.init_from_dir({path!r}) as cube:
    print(json.dumps(answers(cube, build={build})))
"""


def run(path: Path, build: bool) -> Any:
    code = SCRIPT.format(unit=str(UNIT), path=str(path), build=build)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_new_process_same_answers(tmp_path: Path, embedder: Any) -> None:
    from memos_integrations import MemCube
    from tests.unit.test_llama_index_restart import answers

    with MemCube.init_from_dir(tmp_path / "cube", embedder=embedder) as cube:
        built = json.loads(json.dumps(answers(cube, build=True)))  # tuples become lists, as from the child
    loaded = run(tmp_path / "cube", build=False)
    assert loaded == built and built["vec Where does Alice live?"]
