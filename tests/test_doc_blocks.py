"""Every code block of README.md and docs/**/*.md runs, so a documented example cannot rot.

How to write a block that this test runs (contributors, read this):

- A fenced ```` ```python ```` block is a complete program. It runs as ``__main__`` in a
  fresh namespace and a fresh empty working directory, after the earlier blocks of the same
  page, in one subprocess per page (``JAX_PLATFORMS=cpu``, the repository root on
  ``PYTHONPATH``). It must finish quickly on a CPU: use tiny shapes.
- A block that cannot run alone (a fragment continuing an earlier block, a signature, a
  program that needs several hosts or a GPU) is marked on the line right above its fence::

      <!-- doc-test: skip: continues the script above -->

  The reason is required. An unmarked block that fails fails this test.
- A long program (a training script) stays as a user would run it, and gets small
  command-line arguments for the test::

      <!-- doc-test: args --total_steps 12 --progress false -->

- Shell blocks are not run; every ``python -m <module>`` a page names (in a block or in the
  text) must be an importable module, and every repository path it names (``seqjax/...``,
  ``experiments/...``, ``tests/...``, ``docs/...``, ``benchmarks/...``, ``.ci/...``) must
  exist.

New pages under docs/ are picked up automatically. The parsing and running live in
``tests/_doc_blocks.py``, which ``.ci/core_deps_check.sh`` also uses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _doc_blocks import REPO, Block, DocBlockError, doc_pages, named_modules, named_paths, parse

RUNNER = Path(__file__).with_name("_doc_blocks.py")
PAGES = doc_pages()
BLOCKS = [b for page in PAGES for b in parse(page)]
RUNNABLE = [b for b in BLOCKS if b.runnable]


def _run_page(page: Path, workdir: Path, timeout: float = 900) -> tuple[dict, str]:
    """Runs ``page``'s blocks in a subprocess; returns (results by line, output)."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    out_json = workdir / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "run", str(page), "--workdir", str(workdir)]
        + ["--json", str(out_json)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    if not out_json.exists():
        raise AssertionError(f"the block runner crashed on {page}:\n{output[-5000:]}")
    return {int(k): v for k, v in json.loads(out_json.read_text()).items()}, output


@pytest.fixture(scope="module")
def page_results(tmp_path_factory):
    """Runs each page once (lazily), shared by that page's block tests."""
    cache: dict[Path, tuple[dict, str]] = {}

    def get(page: Path) -> tuple[dict, str]:
        if page not in cache:
            cache[page] = _run_page(page, tmp_path_factory.mktemp("doc"))
        return cache[page]

    return get


def test_the_pages_are_found_and_have_runnable_blocks():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/training.md"} <= names
    # The quickstart and the complete training script at least.
    assert any(b.page.name == "README.md" for b in RUNNABLE)
    assert any(b.page.name == "training.md" and b.args for b in RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_python_block_runs(block: Block, page_results):
    results, output = page_results(block.page)
    result = results[block.line]
    assert result["ok"], (
        f"{block.name} failed:\n{result['error']}\n--- output ---\n{output[-3000:]}"
    )


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_named_modules_exist(page: Path):
    missing = []
    for line, module in named_modules(page):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            missing.append(f"{page.relative_to(REPO)}:{line}: python -m {module}")
    assert not missing, "modules named in the docs do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_named_paths_exist(page: Path):
    missing = [
        f"{page.relative_to(REPO)}:{line}: {path}"
        for line, path in named_paths(page)
        if not (REPO / path).exists()
    ]
    assert not missing, "paths named in the docs do not exist:\n" + "\n".join(missing)


def test_skips_are_explicit_and_broken_blocks_fail(tmp_path):
    """The runner itself: an unmarked broken block fails, a marked one is not run."""
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """\
            # A page

            ```python
            import sys
            print("argv", sys.argv[1:])
            assert __name__ == "__main__"
            x = 1
            ```

            <!-- doc-test: skip: a fragment that uses x from the block above -->
            ```python
            print(x)
            ```

            <!-- doc-test: args --steps 3 -->
            ```python
            import sys
            assert sys.argv[1:] == ["--steps", "3"], sys.argv
            ```

            ```python
            print(x)  # fresh namespace: x is not defined here
            ```

            ```bash
            python -m no_such_module_seqjax --flag
            ```

            See seqjax/scan.py, `benchmarks/results/rnn.{json,png}` and docs/_build/html.
            """
        )
    )
    blocks = parse(page)
    assert [(b.line, b.lang, b.skip, b.args) for b in blocks] == [
        (3, "python", None, ()),
        (11, "python", "a fragment that uses x from the block above", ()),
        (16, "python", None, ("--steps", "3")),
        (21, "python", None, ()),
        (25, "bash", None, ()),
    ]
    results, output = _run_page(page, tmp_path / "work", timeout=120)
    assert sorted(results) == [3, 16, 21]  # the skipped block never ran
    assert results[3]["ok"] and results[16]["ok"]
    assert not results[21]["ok"] and "NameError: name 'x' is not defined" in results[21]["error"]
    assert "line 22" in results[21]["error"]  # tracebacks carry the page's line numbers
    assert named_modules(page) == [(26, "no_such_module_seqjax")]
    assert named_paths(page) == [(29, "seqjax/scan.py")]
    assert "1 of 3 blocks passed" not in output and "2 of 3 blocks passed" in output
    # The same runner from the command line exits 1 on a failing block.
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "run", str(page), "--workdir", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- doc-test: skip -->\n```python\nx\n```\n", "needs a reason"),
        ("<!-- doc-test: maybe -->\n```python\nx\n```\n", "unknown doc-test directive"),
        ("<!-- doc-test: skip: why -->\n\n```python\nx\n```\n", "right above a code fence"),
        ("<!-- doc-test: args --a 1 -->\n", "directive without a block"),
        ("```python\nx\n", "never closed"),
    ],
)
def test_malformed_directives_are_errors(tmp_path, text, message):
    page = tmp_path / "bad.md"
    page.write_text(text)
    with pytest.raises(DocBlockError, match=message):
        parse(page)
