"""seqjax.train.data_order: batch order as a pure function of the step."""

from __future__ import annotations

import numpy as np
import pytest

from seqjax import train


def test_batch_indices_are_epoch_permutations_and_pure():
    n, b = 10, 4
    idx = np.concatenate([train.batch_indices(s, n, b, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(idx[:n].tolist()) == list(range(n))
    assert sorted(idx[n : 2 * n].tolist()) == list(range(n))
    assert not np.array_equal(idx[:n], idx[n : 2 * n])
    np.testing.assert_array_equal(train.batch_indices(3, n, b, seed=3), idx[12:16])
    with pytest.raises(ValueError, match="step >= 0"):
        train.batch_indices(-1, n, b)


def test_stream_window_is_contiguous_and_resets_on_wrap():
    s = np.arange(2 * 13).reshape(2, 13)
    ws = [train.stream_window(s, k, 4) for k in range(4)]  # 3 windows per pass
    np.testing.assert_array_equal(ws[1]["inputs"], s[:, 4:8])
    np.testing.assert_array_equal(ws[1]["targets"], s[:, 5:9])
    assert [bool(w["reset"][0]) for w in ws] == [True, False, False, True]
    np.testing.assert_array_equal(ws[3]["inputs"], ws[0]["inputs"])
    with pytest.raises(ValueError, match="seq_len"):
        train.stream_window(s, 0, 13)
