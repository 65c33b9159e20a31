"""Finds and runs the code blocks of README.md and docs/**/*.md (used by tests/test_doc_blocks.py).

Every fenced ```` ```python ```` block of a page runs as a script (``__name__ == "__main__"``)
in a fresh namespace and a fresh working directory, in page order, in one subprocess per page.
A comment on the line directly above the opening fence changes that:

- ``<!-- doc-test: skip: <reason> -->``: the block is not run (a fragment, a signature, a
  program that needs several hosts); the reason is required.
- ``<!-- doc-test: args <arguments> -->``: the block runs with these command-line arguments
  in ``sys.argv[1:]`` (e.g. a small ``--total_steps`` for a training script).

Anything else starting with ``<!-- doc-test`` is an error, as is a directive not followed by a
fence. Shell blocks (``bash``, ``sh``, ``shell``, ``console``) are not run; the test checks that
every module a page names with ``python -m <module>`` exists, and every repository path it
names (``seqjax/...``, ``experiments/...``, ``tests/...``, ...).

Command line (plain Python, no pytest needed; ``.ci/core_deps_check.sh`` uses it)::

    python tests/_doc_blocks.py run PAGE.md [--workdir DIR] [--json OUT.json]

runs the page's runnable Python blocks and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import runpy
import shlex
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON_LANGS = {"python", "py", "python3"}
SHELL_LANGS = {"bash", "sh", "shell", "console", "shell-session"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test\s*:?(?P<body>.*?)-->\s*$")
_MODULE = re.compile(r"\bpython3?\s+-m\s+(?P<module>[A-Za-z_][\w.]*)")
# A repository path named in a page: seqjax/..., experiments/..., benchmarks/, docs/, tests/, .ci/
_PATH = re.compile(
    r"(?<![\w/.-])(?P<path>(?:seqjax|experiments|benchmarks|docs|tests|\.ci)/[\w./-]*)"
)
_BUILD_OUTPUTS = ("docs/_build",)  # paths a page may name that only a build creates


class DocBlockError(ValueError):
    """A malformed ``doc-test`` directive or an unterminated fence."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page.

    Attributes:
      page: the page's path.
      line: 1-based line number of the opening fence.
      lang: the first word of the info string, lower-cased ("" if none).
      code: the block's text (the fence's indentation removed).
      skip: the reason given by a ``skip`` directive, else None.
      args: the arguments of an ``args`` directive (empty without one).
    """

    page: Path
    line: int
    lang: str
    code: str
    skip: str | None = None
    args: tuple[str, ...] = ()

    @property
    def runnable(self) -> bool:
        """A Python block without a skip directive."""
        return self.lang in PYTHON_LANGS and self.skip is None

    @property
    def name(self) -> str:
        """``page:line``, relative to the repository when possible."""
        try:
            page = self.page.resolve().relative_to(REPO)
        except ValueError:
            page = self.page
        return f"{page}:{self.line}"


def doc_pages(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown page under docs/ (build output excluded), sorted."""
    pages = [root / "README.md"] if (root / "README.md").exists() else []
    docs = root / "docs"
    if docs.is_dir():
        pages += sorted(p for p in docs.rglob("*.md") if "_build" not in p.parts)
    return pages


def _parse_directive(text: str, where: str) -> tuple[str | None, tuple[str, ...]]:
    body = text.strip()
    if body.startswith("skip"):
        reason = body[len("skip") :].lstrip(" :").strip()
        if not reason:
            raise DocBlockError(f"{where}: 'doc-test: skip' needs a reason, e.g. skip: a fragment")
        return reason, ()
    if body.startswith("args"):
        return None, tuple(shlex.split(body[len("args") :]))
    raise DocBlockError(
        f"{where}: unknown doc-test directive {body!r}; expected 'skip: <reason>' or "
        f"'args <arguments>'"
    )


def parse(page: Path) -> list[Block]:
    """The fenced code blocks of ``page`` with their directives.

    Raises:
      DocBlockError: a malformed directive, a directive without a fence right after it, or a
        fence that is never closed.
    """
    lines = Path(page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, body) of a directive awaiting its fence
    i = 0
    while i < len(lines):
        text = lines[i]
        d = _DIRECTIVE.match(text)
        if d:
            if pending is not None:
                raise DocBlockError(f"{page}:{pending[0]}: doc-test directive without a block")
            pending = (i + 1, d.group("body"))
            i += 1
            continue
        m = _FENCE.match(text)
        if not m:
            if pending is not None:
                raise DocBlockError(
                    f"{page}:{pending[0]}: a doc-test directive must be the line right above "
                    f"a code fence"
                )
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        info = m.group("info").strip()
        start = i
        body = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if (
                close
                and close.group("fence")[0] == fence[0]
                and len(close.group("fence")) >= len(fence)
                and not close.group("info").strip()
            ):
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        else:
            raise DocBlockError(f"{page}:{start + 1}: code fence never closed")
        skip, args = None, ()
        if pending is not None:
            skip, args = _parse_directive(pending[1], f"{page}:{pending[0]}")
            pending = None
        lang = info.split()[0].lower() if info else ""
        blocks.append(Block(Path(page), start + 1, lang, "\n".join(body) + "\n", skip, args))
        i += 1
    if pending is not None:
        raise DocBlockError(f"{page}:{pending[0]}: doc-test directive without a block")
    return blocks


def named_modules(page: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``python -m <module>`` written in ``page`` (code or text)."""
    out = []
    for n, text in enumerate(Path(page).read_text(encoding="utf-8").splitlines(), start=1):
        out += [(n, m.group("module").rstrip(".")) for m in _MODULE.finditer(text)]
    return out


def named_paths(page: Path) -> list[tuple[int, str]]:
    """``(line, path)`` for every repository path a page names (code or text).

    Patterns (``rnn.{json,png}``, ``<step>``, ``*``) and build outputs are left out.
    """
    out = []
    for n, text in enumerate(Path(page).read_text(encoding="utf-8").splitlines(), start=1):
        for m in _PATH.finditer(text):
            if text[m.end() : m.end() + 1] in ("{", "<", "*"):
                continue
            path = m.group("path").rstrip(".,;:")
            if not path.startswith(_BUILD_OUTPUTS):
                out.append((n, path))
    return out


def run_block(block: Block, workdir: Path) -> dict:
    """Runs one block as ``__main__`` with its args, in a fresh directory under ``workdir``.

    Returns:
      ``{"ok": bool, "error": traceback text or None, "seconds": float}``.
    """
    stem = re.sub(r"[^\w.-]", "_", block.name)
    cwd = workdir / stem
    cwd.mkdir(parents=True, exist_ok=True)
    # Blank lines in front keep the Markdown line numbers in tracebacks.
    script = workdir / f"{stem}.py"
    script.write_text("\n" * block.line + block.code, encoding="utf-8")
    old_cwd, old_argv = os.getcwd(), sys.argv
    t0 = time.perf_counter()
    error = None
    try:
        os.chdir(cwd)
        sys.argv = [str(script), *block.args]
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:  # a script's own sys.exit(0) is success
        if e.code not in (None, 0):
            error = f"SystemExit({e.code!r})\n{traceback.format_exc()}"
    except BaseException:  # noqa: BLE001 - reported as this block's failure
        error = traceback.format_exc()
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    return {"ok": error is None, "error": error, "seconds": time.perf_counter() - t0}


def run_page(page: Path, workdir: Path) -> dict[int, dict]:
    """Runs every runnable Python block of ``page`` in order; results keyed by line."""
    results = {}
    for block in parse(page):
        if not block.runnable:
            continue
        print(f"== doc-test: running {block.name} {' '.join(block.args)}", flush=True)
        results[block.line] = run_block(block, workdir)
        status = "ok" if results[block.line]["ok"] else "FAILED"
        print(f"== doc-test: {block.name} {status} in {results[block.line]['seconds']:.1f} s")
        if results[block.line]["error"]:
            print(results[block.line]["error"], file=sys.stderr, flush=True)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python tests/_doc_blocks.py")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a page's runnable Python blocks")
    run.add_argument("page", type=Path)
    run.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    run.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        parser.error(f"expected a Markdown file, got {str(args.page)!r} (no such file)")
    if args.workdir is None:
        import tempfile

        args.workdir = Path(tempfile.mkdtemp(prefix="doc-blocks-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = run_page(args.page.resolve(), args.workdir.resolve())
    if args.json is not None:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    failed = [line for line, r in results.items() if not r["ok"]]
    print(f"== doc-test: {len(results) - len(failed)} of {len(results)} blocks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
