"""seqjax.ctc against PyTorch's CTC loss and exhaustive enumeration of tiny alignment lattices."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import seqjax
from seqjax import ctc

# Shared compilations: lengths and labels vary by value, shapes stay fixed.
greedy_jit = jax.jit(ctc.greedy_decode, static_argnames=("blank",))


# -- NumPy references -----------------------------------------------------------------------


def collapse(path, blank):
    return tuple(k for k, _ in itertools.groupby(path) if k != blank)


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def enumerate_lattice(lp_TV, blank):
    """Every path of ``lp_TV [T, V]``: {labelling: (log of summed prob, best path, its score)}."""
    time, vocab = lp_TV.shape
    out = {}
    for path in itertools.product(range(vocab), repeat=time):
        score = float(sum(lp_TV[t, c] for t, c in enumerate(path)))
        lab = collapse(path, blank)
        total, best, best_score = out.get(lab, (-np.inf, None, -np.inf))
        if score > best_score:
            best, best_score = path, score
        out[lab] = (np.logaddexp(total, score), best, best_score)
    return out


def greedy_reference(logits, lengths, blank):
    out = []
    for row, n in zip(np.asarray(logits), np.asarray(lengths), strict=True):
        out.append(list(collapse(row[:n].argmax(-1).tolist(), blank)))
    return out


def torch_ctc(logits, logit_lengths, labels, label_lengths, blank, reduction, zero_infinity):
    """Loss and d(sum of loss)/d(logits) from torch.nn.functional.ctc_loss, float64."""
    x = torch.tensor(np.asarray(logits, np.float64), requires_grad=True)
    loss = torch.nn.functional.ctc_loss(
        x.log_softmax(-1).transpose(0, 1),
        torch.tensor(np.asarray(labels), dtype=torch.long),
        torch.tensor(np.asarray(logit_lengths), dtype=torch.long),
        torch.tensor(np.asarray(label_lengths), dtype=torch.long),
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    if torch.isfinite(loss.sum()):
        loss.sum().backward()
        grad = x.grad.numpy()
    else:
        grad = None
    return loss.detach().numpy(), grad


# -- loss -----------------------------------------------------------------------------------

B, T, V, L = 7, 6, 4, 4


def min_frames(labels, n):
    return n + sum(labels[i] == labels[i + 1] for i in range(n - 1))


def random_batch(seed, blank, infeasible=False):
    """Labels with repeats, an empty row, a row at exactly its minimal T, variable lengths."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, T, V)) * 2
    nonblank = [c for c in range(V) if c != blank]
    labels = rng.choice(nonblank, size=(B, L))
    labels[0, :3] = nonblank[0]  # "aaa": needs 5 frames
    label_lengths = rng.integers(0, L + 1, size=B)
    label_lengths[0], label_lengths[1] = 3, 0
    labels[1] = rng.integers(0, V, size=L)  # an empty row: its padding may even hold blanks
    for b in range(B):
        while min_frames(labels[b], label_lengths[b]) > T:
            label_lengths[b] -= 1
    need = np.array([min_frames(r, n) for r, n in zip(labels, label_lengths, strict=True)])
    logit_lengths = np.array([rng.integers(max(m, 1), T + 1) for m in need])
    logit_lengths[0] = need[0]  # minimal feasible T
    if infeasible:
        label_lengths[3], labels[3, :2] = 2, nonblank[1]  # "bb" needs 3 frames
        logit_lengths[3] = 2
        labels[4], label_lengths[4], logit_lengths[4] = nonblank[0], 4, 5  # "aaaa" needs 7
    return logits, logit_lengths, labels, label_lengths


def total_loss(logits, *args, **kwargs):
    return jnp.sum(ctc.ctc_loss(logits, *args, **kwargs))


loss_grad = jax.jit(jax.grad(total_loss), static_argnames=("blank", "reduction", "zero_infinity"))


@pytest.mark.parametrize("blank", [0, V - 1])
def test_loss_and_gradient_equal_torch(x64, blank):
    for seed in range(3):
        args = random_batch(seed, blank)
        jargs = [jnp.asarray(a) for a in args]
        for reduction in ("none", "sum", "mean"):  # the gradient below is checked for "mean"
            want, want_grad = torch_ctc(*args, blank, reduction, False)
            got = ctc.ctc_loss(*jargs, blank=blank, reduction=reduction)
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        grad = loss_grad(*jargs, blank=blank, reduction="mean")
        np.testing.assert_allclose(grad, want_grad, rtol=1e-8, atol=1e-10)


def test_infeasible_rows_and_zero_infinity_equal_torch(x64):
    args = random_batch(5, 0, infeasible=True)
    jargs = [jnp.asarray(a) for a in args]
    want, _ = torch_ctc(*args, 0, "none", False)
    assert np.isinf(want[3]) and np.isinf(want[4])  # infeasible for PyTorch too
    got = ctc.ctc_loss(*jargs)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-10)
    for reduction in ("none", "mean", "sum"):  # the gradient below is checked for "sum"
        want, want_grad = torch_ctc(*args, 0, reduction, True)
        got = ctc.ctc_loss(*jargs, reduction=reduction, zero_infinity=True)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    grad = loss_grad(*jargs, reduction="sum", zero_infinity=True)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-8, atol=1e-10)
    # Without zero_infinity an infeasible row is inf with a zero (not NaN) gradient.
    grad = jax.grad(lambda x: ctc.ctc_loss(x, *jargs[1:])[3])(jargs[0])
    np.testing.assert_array_equal(grad, 0.0)


def test_loss_closed_form_and_half_precision():
    # Uniform frames: p("ab") = (paths collapsing to "ab") / V^T, counted by enumeration.
    lp = np.full((4, 3), -np.log(3))
    count = enumerate_lattice(lp, 0)[(1, 2)][0]
    loss = ctc.ctc_loss(jnp.zeros((1, 4, 3)), jnp.array([4]), jnp.array([[1, 2]]), jnp.array([2]))
    np.testing.assert_allclose(loss, [-count], rtol=1e-6)
    logits = jax.random.normal(jax.random.key(0), (2, 5, 4))
    args = (jnp.array([5, 4]), jnp.array([[1, 2], [3, 3]]), jnp.array([2, 2]))
    half = ctc.ctc_loss(logits.astype(jnp.bfloat16), *args)
    full = ctc.ctc_loss(logits.astype(jnp.bfloat16).astype(jnp.float32), *args)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, full, rtol=1e-6)


# -- greedy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [0, 2])
def test_greedy_equals_numpy_reference(blank):
    rng = np.random.default_rng(blank)
    # Few classes and peaked frames give runs of repeats and blanks between equal labels.
    logits = rng.normal(size=(6, 9, 3)) * 3
    lengths = np.array([9, 0, 1, 5, 8, 9])
    labels, n = greedy_jit(jnp.asarray(logits, jnp.float32), jnp.asarray(lengths), blank=blank)
    want = greedy_reference(logits.astype(np.float32), lengths, blank)
    assert labels.shape == (6, 9) and labels.dtype == jnp.int32
    for row, k, w in zip(np.asarray(labels), np.asarray(n), want, strict=True):
        assert row[:k].tolist() == w
        assert (row[k:] == blank).all()
    assert sum(len(w) for w in want) > 6  # the case exercises collapsing non-trivially


# -- prefix beam search ---------------------------------------------------------------------

BT, BV, BEAM, TOPK = 4, 3, 31, 6  # 31 = every labelling of <= 4 labels over 2 symbols


def exhaustive_ranking(lp_TV, length, score_fn=lambda lab, ctc_lp: ctc_lp):
    table = enumerate_lattice(lp_TV[:length], 0)
    ranked = sorted(((score_fn(lab, v[0]), lab, v[0]) for lab, v in table.items()), reverse=True)
    return ranked


def hypotheses(res, b):
    return [
        tuple(res.labels[b, i, : int(res.lengths[b, i])].tolist())
        for i in range(res.labels.shape[1])
    ]


@pytest.fixture(scope="module")
def beam_case():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3, BT, BV)) * 1.5
    return log_softmax(logits), np.array([4, 3, 1])


def test_wide_beam_equals_exhaustive_enumeration(beam_case, x64):
    lp, lengths = beam_case
    res = ctc.beam_search(jnp.asarray(lp), jnp.asarray(lengths), beam_width=BEAM, top_k=TOPK)
    for b, n in enumerate(lengths):
        ranked = exhaustive_ranking(lp[b], n)[:TOPK]
        k = min(TOPK, len(ranked))
        assert hypotheses(res, b)[:k] == [lab for _, lab, _ in ranked]
        np.testing.assert_allclose(res.ctc_log_probs[b, :k], [s for s, _, _ in ranked], rtol=1e-9)
        np.testing.assert_allclose(res.scores[b, :k], res.ctc_log_probs[b, :k])
        assert np.all(np.isneginf(res.scores[b, k:]))  # fewer labellings than top_k ...
        assert np.all(res.lengths[b, k:] == 0) and np.all(res.labels[b, k:] == 0)  # ... empty
    # The most probable labelling is not the greedy one here (the case is not trivial).
    greedy, glen = ctc.greedy_decode(jnp.asarray(lp), jnp.asarray(lengths))
    assert any(tuple(greedy[b, : int(glen[b])].tolist()) != hypotheses(res, b)[0] for b in range(3))


def test_narrow_beam_scores_are_lower_bounds(beam_case, x64):
    lp, lengths = beam_case
    res = ctc.beam_search(jnp.asarray(lp), jnp.asarray(lengths), beam_width=2, top_k=2)
    for b, n in enumerate(lengths):
        exact = {lab: s for s, lab, _ in exhaustive_ranking(lp[b], n)}
        for lab, s in zip(hypotheses(res, b), np.asarray(res.ctc_log_probs[b]), strict=True):
            assert s <= exact[lab] + 1e-12
        assert len(set(hypotheses(res, b))) == 2  # merged, never duplicated
    # max_length=1 keeps only labellings of at most one label, with their exact probabilities.
    res = ctc.beam_search(
        jnp.asarray(lp), jnp.asarray(lengths), beam_width=4, top_k=3, max_length=1
    )
    assert res.labels.shape == (3, 3, 1)
    for b, n in enumerate(lengths):
        short = [(lab, s) for s, lab, _ in exhaustive_ranking(lp[b], n) if len(lab) <= 1]
        assert hypotheses(res, b) == [lab for lab, _ in short]
        np.testing.assert_allclose(res.ctc_log_probs[b], [s for _, s in short], rtol=1e-9)


def bigram_lm(table_VV, first_V):
    """A plain-function LM: the state is the last label."""

    def step(state, token):
        return token, table_VV[token]

    return ctc.LanguageModel(step, jnp.int32(0), first_V)


def test_shallow_fusion_equals_exhaustive_fused_ranking(beam_case, x64):
    lp, lengths = beam_case
    rng = np.random.default_rng(3)
    table = log_softmax(rng.normal(size=(BV, BV)) * 2)
    first = log_softmax(rng.normal(size=BV) * 2)
    weight, bonus = 0.7, 0.4

    def fused(lab, ctc_lp):
        lm_lp = sum(first[t] if i == 0 else table[lab[i - 1], t] for i, t in enumerate(lab))
        return ctc_lp + weight * lm_lp + bonus * len(lab)

    lm = bigram_lm(jnp.asarray(table), jnp.asarray(first))
    res = ctc.beam_search(
        jnp.asarray(lp),
        jnp.asarray(lengths),
        beam_width=BEAM,
        top_k=TOPK,
        lm=lm,
        lm_weight=weight,
        length_bonus=bonus,
    )
    plain = ctc.beam_search(jnp.asarray(lp), jnp.asarray(lengths), beam_width=BEAM, top_k=TOPK)
    for b, n in enumerate(lengths[:2]):
        ranked = exhaustive_ranking(lp[b], n, fused)[:TOPK]
        assert hypotheses(res, b) == [lab for _, lab, _ in ranked]
        np.testing.assert_allclose(res.scores[b], [s for s, _, _ in ranked], rtol=1e-9)
        np.testing.assert_allclose(res.ctc_log_probs[b], [c for _, _, c in ranked], rtol=1e-9)
    assert hypotheses(res, 0) != hypotheses(plain, 0)  # the LM changed the ranking


def test_forbidding_lm_changes_the_best_hypothesis(beam_case, x64):
    lp, lengths = beam_case
    lp = jnp.asarray(lp)
    allowed = jnp.log(jnp.array([1.0, 0.0, 1.0]))  # label 1 is forbidden
    lm = ctc.LanguageModel(lambda s, t: (s, allowed), jnp.zeros(()), allowed)
    plain = ctc.beam_search(lp, jnp.asarray(lengths), beam_width=BEAM, top_k=TOPK)
    fused = ctc.beam_search(
        lp, jnp.asarray(lengths), beam_width=BEAM, top_k=TOPK, lm=lm, lm_weight=1.0
    )
    off = ctc.beam_search(
        lp, jnp.asarray(lengths), beam_width=BEAM, top_k=TOPK, lm=lm, lm_weight=0.0
    )
    changed = 0
    for b, n in enumerate(lengths):
        ranked = exhaustive_ranking(np.asarray(lp[b]), n)
        assert hypotheses(plain, b)[0] == ranked[0][1]
        assert hypotheses(off, b)[0] == ranked[0][1]  # weight 0 ignores the LM, even its -inf
        best_allowed = next(lab for _, lab, _ in ranked if 1 not in lab)
        assert hypotheses(fused, b)[0] == best_allowed
        assert float(fused.lm_log_probs[b, 0]) == 0.0
        changed += best_allowed != ranked[0][1]
    assert changed >= 1


def test_beam_search_under_jit_matches_eager(beam_case, x64):
    lp, lengths = beam_case
    lp = jnp.asarray(lp)
    eager = ctc.beam_search(lp, jnp.asarray(lengths), beam_width=BEAM, top_k=TOPK)
    jitted = jax.jit(lambda x, n: ctc.beam_search(x, n, beam_width=BEAM, top_k=TOPK))(
        lp, jnp.asarray(lengths)
    )
    jax.tree_util.tree_map(np.testing.assert_array_equal, eager, jitted)


def test_cell_language_model_matches_scanned_lstm():
    cell = seqjax.LSTM(hidden_size=5)
    keys = jax.random.split(jax.random.key(1), 4)
    n_lm, bos, vocab_map = 5, 4, jnp.array([0, 2, 3])  # CTC {blank, a, b} -> LM ids
    params = cell.init(keys[0], 3)
    embed = jax.random.normal(keys[1], (n_lm, 3))
    w_out, b_out = jax.random.normal(keys[2], (5, n_lm)), jax.random.normal(keys[3], (n_lm,))
    lm = ctc.cell_language_model(cell, params, embed, w_out, b_out, bos=bos, vocab_map=vocab_map)
    ctc_tokens = [2, 1, 1]
    _, ys = seqjax.scan(
        cell, params, embed[vocab_map[jnp.array([0, 2, 1, 1])].at[0].set(bos)][None]
    )
    want = jax.nn.log_softmax(ys[0] @ w_out + b_out)[:, vocab_map]
    np.testing.assert_allclose(lm.initial_log_probs, want[0], rtol=1e-5, atol=1e-6)
    state, step = lm.initial_state, jax.jit(lm.step)
    for i, tok in enumerate(ctc_tokens):
        state, log_probs = step(state, jnp.int32(tok))
        np.testing.assert_allclose(log_probs, want[i + 1], rtol=1e-5, atol=1e-6)
    # In the search, the reported LM score of the best hypothesis is the model's.
    lp = jax.nn.log_softmax(jax.random.normal(keys[0], (1, 3, 3)) * 3)
    res = ctc.beam_search(lp, jnp.array([3]), beam_width=4, lm=lm, lm_weight=0.5)
    lab = hypotheses(res, 0)[0]
    state, lm_lp, nxt = lm.initial_state, 0.0, lm.initial_log_probs
    for tok in lab:
        lm_lp += float(nxt[tok])
        state, nxt = step(state, jnp.int32(tok))
    np.testing.assert_allclose(res.lm_log_probs[0, 0], lm_lp, rtol=1e-5)


# -- alignment and posteriors ---------------------------------------------------------------


def test_best_alignment_is_the_best_valid_path(x64):
    rng = np.random.default_rng(11)
    time, vocab = 5, 3
    logits = rng.normal(size=(6, time, vocab)) * 2
    labels = np.array([[1, 1], [1, 2], [2, 0], [0, 0], [1, 2], [2, 2]])
    label_lengths = np.array([2, 2, 1, 0, 2, 2])
    logit_lengths = np.array([5, 4, 3, 2, 0, 2])  # the last two rows are infeasible
    ali = ctc.best_alignment(
        *(jnp.asarray(a) for a in (logits, logit_lengths, labels, label_lengths))
    )
    lp = log_softmax(logits)
    for b in range(6):
        n, k = logit_lengths[b], label_lengths[b]
        target = tuple(labels[b, :k].tolist())
        tokens, index = np.asarray(ali.tokens[b]), np.asarray(ali.label_index[b])
        assert (tokens[n:] == 0).all() and (index[n:] == -1).all()
        entry = (
            enumerate_lattice(lp[b, :n], 0).get(target) if n else ({(): (0, (), 0.0)}.get(target))
        )
        if entry is None:
            assert np.isneginf(ali.log_prob[b])
            continue
        np.testing.assert_allclose(ali.log_prob[b], entry[2], rtol=1e-10)
        path = tokens[:n].tolist()
        assert collapse(path, 0) == target
        np.testing.assert_allclose(sum(lp[b, t, c] for t, c in enumerate(path)), entry[2])
        # label_index names the position in labels of each emitted label, runs in order.
        emitted = [i for i in index[:n].tolist() if i >= 0]
        assert [labels[b, i] for i in emitted] == [c for c in path if c != 0]
        assert [i for i, _ in itertools.groupby(emitted)] == list(range(k))


def test_frame_posteriors():
    logits = jax.random.normal(jax.random.key(2), (2, 4, 3))
    post = ctc.frame_posteriors(logits, jnp.array([4, 2]))
    np.testing.assert_allclose(post[0], jax.nn.softmax(logits[0]), rtol=1e-6)
    np.testing.assert_allclose(post[1, :2].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(post[1, 2:], 0.0)


# -- metrics --------------------------------------------------------------------------------


def test_error_rates_and_text():
    # "abc" -> "abd": 1 substitution; "de" -> "dxe": 1 insertion; 5 reference characters.
    assert ctc.cer(["abc", "de"], ["abd", "dxe"]) == pytest.approx(2 / 5)
    assert ctc.cer("abc", "abc") == 0.0
    # 1 substitution + 1 deletion over 3 + 2 words.
    assert ctc.wer(["four zero one", "two two"], ["four six one", "two"]) == pytest.approx(2 / 5)
    assert ctc.labels_to_text(np.array([[1, 2, 0]]), np.array([2]), "_xy") == ["xy"]
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        ctc.cer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"hyps\[0\] must be a str"):
        ctc.wer(["a"], [1])
    with pytest.raises(ValueError, match="label indices"):
        ctc.labels_to_text(np.array([[5]]), np.array([1]), "_ab")


# -- errors ---------------------------------------------------------------------------------


def test_errors_name_what_was_expected():
    logits = jnp.zeros((2, 3, 4))
    lens, labels, llens = jnp.array([3, 2]), jnp.array([[1, 2], [3, 0]]), jnp.array([2, 1])
    cases = [
        ((logits[0], lens, labels, llens), {}, ValueError, r"logits must have shape \[B, T, V\]"),
        ((jnp.zeros((2, 3, 4), jnp.int32), lens, labels, llens), {}, TypeError, "floating"),
        ((logits, lens.astype(jnp.float32), labels, llens), {}, TypeError, "integer dtype"),
        ((logits, jnp.array([3]), labels, llens), {}, ValueError, r"shape \[B\] = \(2,\)"),
        ((logits, jnp.array([4, 2]), labels, llens), {}, ValueError, r"logit_lengths .*\[0, 3\]"),
        ((logits, lens, labels, jnp.array([3, 1])), {}, ValueError, r"label_lengths .*\[0, 2\]"),
        ((logits, lens, labels[:1], llens), {}, ValueError, "B = 2"),
        ((logits, lens, labels.astype(jnp.float32), llens), {}, TypeError, "integer dtype"),
        ((logits, lens, jnp.array([[1, 0], [3, 0]]), llens), {}, ValueError, r"labels\[0, 1\]"),
        ((logits, lens, jnp.array([[1, 4], [3, 0]]), llens), {}, ValueError, r"\[0, 4\)"),
        ((logits, lens, labels, llens), {"blank": 4}, ValueError, "blank must be"),
        ((logits, lens, labels, llens), {"reduction": "avg"}, ValueError, "reduction"),
        ((logits, lens, labels, llens), {"zero_infinity": 1}, TypeError, "zero_infinity"),
    ]
    for args, kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            ctc.ctc_loss(*args, **kwargs)
    with pytest.raises(ValueError, match=r"labels\[1, 0\]"):
        ctc.best_alignment(logits, lens, jnp.array([[1, 2], [0, 0]]), llens)
    with pytest.raises(ValueError, match="logit_lengths"):
        ctc.greedy_decode(logits, jnp.array([-1, 2]))
    with pytest.raises(ValueError, match="top_k=3 exceeds beam_width=2"):
        ctc.beam_search(logits, lens, beam_width=2, top_k=3)
    with pytest.raises(ValueError, match="beam_width must be a positive int"):
        ctc.beam_search(logits, lens, beam_width=0)
    bad_lm = ctc.LanguageModel(lambda s, t: (s, jnp.zeros(3)), jnp.zeros(()), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"log_probs must have shape \[V\] = \(4,\)"):
        ctc.beam_search(logits, lens, beam_width=2, lm=bad_lm)
    with pytest.raises(ValueError, match="bos must be"):
        cell = seqjax.GRU(hidden_size=2)
        params = cell.init(jax.random.key(0), 2)
        ctc.cell_language_model(
            cell, params, jnp.zeros((3, 2)), jnp.zeros((2, 3)), jnp.zeros(3), bos=3
        )
