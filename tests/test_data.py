"""resetlstm.data.pack_documents: property tests against the documents themselves."""
import numpy as np
import pytest
from resetlstm.data import pack_documents


def check_packing(docs, packed, next_step=True):
    """Every property the packing promises, checked against the raw documents."""
    B, T, K = packed.batch_size, packed.seq_len, packed.num_batches
    steps = K * T
    lengths = [len(d) for d in docs]
    x, r, y, w = (packed.stream_inputs, packed.stream_resets, packed.stream_targets,
                  packed.stream_weights)
    assert x.shape[:2] == r.shape == w.shape == (B, steps)
    assert steps - T < max(packed.stream_lengths) <= steps  # no all-padding batch at the end

    owner = np.full((B, steps), -1)  # which document covers (stream, step)
    for i, d in enumerate(docs):
        b, off = packed.doc_stream[i], packed.doc_offset[i]
        if len(d) == 0:
            assert b == -1 and off == -1
            continue
        d = np.asarray(d)
        # every token of the document, in order, contiguous
        np.testing.assert_array_equal(x[b, off:off + len(d)], d)
        assert (owner[b, off:off + len(d)] == -1).all(), "two documents share a step"
        owner[b, off:off + len(d)] = i
        # each document starts with a reset and has no other reset inside
        assert r[b, off] and not r[b, off + 1:off + len(d)].any()
        if next_step:
            # targets: the next token of the same document; the last token has none
            np.testing.assert_array_equal(y[b, off:off + len(d) - 1], d[1:])
            assert (w[b, off:off + len(d) - 1] == 1).all() and w[b, off + len(d) - 1] == 0
    # tokens laid end to end from step 0: padding only at the tail of each stream
    for b in range(B):
        n = packed.stream_lengths[b]
        assert (owner[b, :n] >= 0).all() and (owner[b, n:] == -1).all()
        assert (np.diff(owner[b, :n]) >= 0).all(), "documents out of their original order"
    # resets exactly at document starts and at the start of each stream's tail padding,
    # weights exactly on steps with a target
    tails = [b for b in range(B) if packed.stream_lengths[b] < steps]
    assert all(r[b, packed.stream_lengths[b]] for b in tails)
    assert r.sum() == sum(1 for n in lengths if n > 0) + len(tails)
    assert (w[owner == -1] == 0).all()
    expected_targets = sum(max(n - 1, 0) for n in lengths) if next_step else sum(lengths)
    assert packed.num_targets == int(w.sum()) == expected_targets
    # no target crosses a document boundary: a weighted step's target is inside its document
    if next_step:
        bb, tt = np.nonzero(w)
        assert (tt + 1 < steps).all() and (owner[bb, tt + 1] == owner[bb, tt]).all()
    # balanced: longest-first greedy leaves max - min <= the longest document
    assert packed.stream_lengths.max() - packed.stream_lengths.min() <= max(lengths)
    assert packed.num_tokens == sum(lengths)
    assert packed.padding_fraction == pytest.approx(1 - sum(lengths) / (B * steps))
    # batch-major arrays: batch k, row b = steps [k*T, (k+1)*T) of stream b
    for k in range(K):
        (bx, br), by, bw = packed.batch(k)
        for name, got, full in (("inputs", bx, x), ("resets", br, r), ("targets", by, y),
                                ("weights", bw, w)):
            np.testing.assert_array_equal(got, full[:, k * T:(k + 1) * T], err_msg=name)
    assert packed.inputs.shape[:2] == (K * B, T)
    assert len(packed) == K


@pytest.mark.parametrize("seed", range(8))
def test_pack_properties_randomized(seed):
    """Random corpora (empty and one-token documents, fewer documents than streams, documents
    longer than seq_len, ...) and random batch_size / seq_len."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        lengths = rng.integers(0, 41, size=rng.integers(1, 31))
        lengths[rng.integers(len(lengths))] = rng.integers(1, 41)  # at least one token
        if rng.random() < 0.3:
            lengths[rng.random(len(lengths)) < 0.3] = 1
        docs = [rng.integers(1, 50, size=n) for n in lengths]
        batch_size, seq_len = int(rng.integers(1, 8)), int(rng.integers(1, 10))
        check_packing(docs, pack_documents(docs, batch_size, seq_len))


def test_padding_fraction_small_for_many_documents():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 256, size=n) for n in rng.integers(1, 200, size=2000)]
    packed = pack_documents(docs, batch_size=16, seq_len=32)
    check_packing(docs, packed)
    # longest-first greedy: the streams differ by less than one document (<200 steps)
    assert packed.padding_fraction < 0.02, packed
    assert 0.0 <= packed.padding_fraction


def test_feature_documents_and_dtypes():
    rng = np.random.default_rng(1)
    docs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 1, 9, 4, 7)]
    packed = pack_documents(docs, batch_size=2, seq_len=4)
    assert packed.inputs.shape == (packed.num_batches * 2, 4, 3)
    assert packed.inputs.dtype == np.float32 and packed.targets.dtype == np.float32
    assert packed.resets.dtype == bool and packed.sample_weights.dtype == np.float32
    check_packing(docs, packed)


def test_token_lists_keep_integer_dtype():
    packed = pack_documents([[1, 2, 3], [4, 5]], batch_size=2, seq_len=2, dtype=np.int32)
    assert packed.inputs.dtype == np.int32 and packed.targets.dtype == np.int32
    # two documents, two streams: one each, no padding inside a document
    np.testing.assert_array_equal(packed.stream_inputs, [[1, 2, 3, 0], [4, 5, 0, 0]])
    np.testing.assert_array_equal(packed.stream_targets, [[2, 3, 0, 0], [5, 0, 0, 0]])
    np.testing.assert_array_equal(packed.stream_weights, [[1, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(packed.stream_resets, [[1, 0, 0, 1], [1, 0, 1, 0]])
    assert packed.padding_fraction == pytest.approx(3 / 8)


def test_explicit_per_step_targets():
    rng = np.random.default_rng(2)
    docs = [rng.integers(0, 9, size=n) for n in (6, 3, 8, 2)]
    labels = [d * 10 for d in docs]
    packed = pack_documents(docs, batch_size=3, seq_len=3, targets=labels, target_pad_value=-1)
    check_packing(docs, packed, next_step=False)
    for i, d in enumerate(docs):
        b, off = packed.doc_stream[i], packed.doc_offset[i]
        np.testing.assert_array_equal(packed.stream_targets[b, off:off + len(d)], labels[i])
        assert (packed.stream_weights[b, off:off + len(d)] == 1).all()
    assert (packed.stream_targets[packed.stream_weights == 0] == -1).all()


def test_dataset_in_stream_order():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    docs = [rng.integers(1, 30, size=n) for n in rng.integers(1, 25, size=40)]
    packed = pack_documents(docs, batch_size=4, seq_len=5)
    ds = packed.dataset()
    (xs, rs), ys, ws = ds.element_spec
    assert xs.shape == (4, 5) and rs.shape == (4, 5) and rs.dtype == tf.bool
    assert ys.shape == (4, 5) and ws.shape == (4, 5) and ws.dtype == tf.float32
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == packed.num_batches
    for k, ((x, r), y, w) in enumerate(elements):
        (ex, er), ey, ew = packed.batch(k)
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(r, er)
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(w, ew)


@pytest.mark.parametrize("kwargs, match", [
    (dict(docs=[[1, 2]], batch_size=0, seq_len=4), r"`batch_size`.*positive.*batch_size=0"),
    (dict(docs=[[1, 2]], batch_size=2, seq_len=2.5), r"`seq_len`.*positive.*seq_len=2.5"),
    (dict(docs=[[1, 2]], batch_size=True, seq_len=2), r"`batch_size`"),
    (dict(docs=[], batch_size=2, seq_len=2), r"`docs` is empty"),
    (dict(docs=[[], []], batch_size=2, seq_len=2), r"all documents are empty"),
    (dict(docs=[np.zeros((3, 2)), np.zeros((3, 4))], batch_size=2, seq_len=2),
     r"docs\[0\] has shape \(3, 2\) but docs\[1\] has shape \(3, 4\)"),
    (dict(docs=[[1, 2], 3], batch_size=2, seq_len=2), r"`docs\[1\]` must be a sequence"),
    (dict(docs=[[1, 2], [3]], batch_size=2, seq_len=2, targets=[[1, 2]]),
     r"one entry per document: expected 2, received 1"),
    (dict(docs=[[1, 2], [3]], batch_size=2, seq_len=2, targets=[[1, 2], [3, 4]]),
     r"targets\[1\] must have the length of docs\[1\] \(1\), received length 2"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pack_documents(**kwargs)


def test_docs_must_be_a_sequence():
    with pytest.raises(TypeError, match="`docs` must be a sequence"):
        pack_documents("some text", 2, 2)


def test_dataset_resets_dtype():
    """resets come as bool or 0/1 numbers (numpy or TF dtype names); anything else is refused
    with the argument named."""
    import tensorflow as tf
    packed = pack_documents([np.arange(5), np.arange(3)], batch_size=2, seq_len=4)
    for dtype, want in (("bool", tf.bool), ("int32", tf.int32), (tf.float32, tf.float32)):
        (_, resets), _, _ = next(iter(packed.dataset(resets_dtype=dtype)))
        assert resets.dtype == want
        np.testing.assert_array_equal(np.asarray(resets, bool),
                                      packed.resets.reshape(-1, 2, 4)[0])
    for bad in ("x", "str", object):
        with pytest.raises(ValueError, match=r"`resets_dtype` must be bool or a number type"):
            packed.dataset(resets_dtype=bad)
