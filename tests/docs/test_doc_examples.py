"""The ```python blocks of docs/*.md run offline, and so do the docstring examples of every module.

Pages: the blocks of one page run in order in one namespace and one working directory, as a reader
runs the page top to bottom: the pages follow LangChain's Setup / Instantiate / Search / Async
template, where later blocks use the ``cube`` or ``store`` an earlier one made. Each block is still
its own test; running one alone first runs the blocks above it. A block with top-level ``await``
runs in a fresh event loop. A block after a ``<!-- not-run -->`` line is skipped: use that only for
what cannot run offline (a Neo4j server, a real API key). The stand-ins for hosted chat models and
model checkpoints are the README's, listed with their reasons in ``doc_blocks.SUBSTITUTIONS``.

Docstrings: ``doctest.testmod`` over every module of the package. A module whose optional
dependency is missing (its extra is not installed) is skipped, naming the extra. The faces' classes
follow LangChain's docstring template, whose examples are ``.. code-block:: python`` sections rather
than ``>>>`` lines; those run too, in order, one namespace per docstring, with the same stand-ins.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from doc_blocks import (
    ROOT,
    SUBSTITUTIONS,
    Block,
    close_all,
    execute,
    fenced_blocks,
    forget_chroma_clients,
    new_namespace,
    offline,
)

from memos_integrations.errors import MissingExtraError

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [b for page in PAGES for b in fenced_blocks(page)]


@dataclass
class PageRun:
    """One page's shared namespace and directory, and how far down the page it has run."""

    directory: Path
    namespace: dict[str, Any] = field(default_factory=new_namespace)
    next_block: int = 0
    broken: str | None = None


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    runs: dict[Path, PageRun] = {}

    def get(page: Path) -> PageRun:
        if page not in runs:
            runs[page] = PageRun(tmp_path_factory.mktemp(page.stem))
        return runs[page]

    yield get
    for run in runs.values():
        close_all(run.namespace)
    forget_chroma_clients()


def _run(block: Block, run: PageRun, tiny: Path | None) -> None:
    try:
        execute(offline(block.code, tiny), run.namespace, f"{block.path}:{block.line}")
    except BaseException as exc:
        run.broken = f"{block.path.name} block {block.id} (line {block.line}): {type(exc).__name__}: {exc}"
        raise


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.path.stem}:{b.id}" for b in BLOCKS])
def test_doc_block(block: Block, page_runs: Any, monkeypatch: pytest.MonkeyPatch,
                   request: pytest.FixtureRequest) -> None:
    page = [b for b in BLOCKS if b.path == block.path]
    tiny = request.getfixturevalue("tiny_model") if any("Qwen2.5" in b.code for b in page) else None
    run = page_runs(block.path)
    monkeypatch.chdir(run.directory)
    for earlier in page[run.next_block:block.index]:  # this block may need what the blocks above made
        if run.broken:
            break
        if not earlier.not_run:
            _run(earlier, run, tiny)
        run.next_block = earlier.index + 1
    if run.broken:
        pytest.fail(f"a block above this one failed: {run.broken}")
    if block.not_run:
        run.next_block = block.index + 1
        pytest.skip("marked <!-- not-run -->: needs what this machine does not have")
    _run(block, run, tiny)
    run.next_block = block.index + 1


def test_every_stand_in_is_used() -> None:
    """A substitution no block needs any more is dead weight in the table: remove it."""
    texts = [b.code for b in BLOCKS] + [b.code for b in fenced_blocks(ROOT / "README.md")]
    for sub in SUBSTITUTIONS:
        assert any(re.search(sub.pattern, t) for t in texts), f"no doc block uses the stand-in for: {sub.why}"


PACKAGE = ROOT / "memos_integrations"
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        module = importlib.import_module(name)
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    except ImportError as exc:
        pytest.skip(f"{name} needs {exc.name}, which is not installed")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in finder.find(module, name):
        if test.examples:
            runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def _code_blocks(doc: str) -> list[str]:
    """The ``.. code-block:: python`` sections of a reST docstring, dedented."""
    blocks, lines, i = [], doc.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() != ".. code-block:: python":
            i += 1
            continue
        indent, body = len(lines[i]) - len(lines[i].lstrip()), []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
    return blocks


def _docstring_code() -> list[tuple[str, str, Path, list[str]]]:
    """(qualified name, module, file, code blocks) per docstring with code blocks, read without importing."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [tree, *(n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)))]
        for node in nodes:
            blocks = _code_blocks(ast.get_docstring(node) or "")
            if blocks:
                found.append((module + ("" if node is tree else "." + node.name), module, path, blocks))
    return found


DOCSTRING_CODE = _docstring_code()


@pytest.mark.parametrize(("name", "module", "path", "blocks"), DOCSTRING_CODE, ids=[n for n, *_ in DOCSTRING_CODE])
def test_docstring_code_blocks(name: str, module: str, path: Path, blocks: list[str], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    try:
        importlib.import_module(module)
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    except ImportError as exc:
        pytest.skip(f"{module} needs {exc.name}, which is not installed")
    tiny = request.getfixturevalue("tiny_model") if any("Qwen2.5" in b for b in blocks) else None
    monkeypatch.chdir(tmp_path)
    namespace = new_namespace()
    try:
        for i, code in enumerate(blocks):
            execute(offline(code, tiny), namespace, f"{path}:{name} code-block {i}")
    finally:
        close_all(namespace)
