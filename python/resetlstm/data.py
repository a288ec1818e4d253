"""Packing variable-length documents into stateful streams.

A stateful recurrent model sees each batch row as one continuous stream. To train it on many
documents of different lengths without padding every document to a common length, lay the
documents end to end into ``batch_size`` streams of near-equal total length, mark the first step of
every document with a reset (so the state never leaks from one document into the next), and cut the
streams into batches of ``seq_len`` steps::

    packed = resetlstm.data.pack_documents(docs, batch_size=64, seq_len=100)
    model.fit(packed.dataset(), epochs=3, shuffle=False)     # model: stateful, inputs (x, resets)

Batch ``k`` holds steps ``[k * seq_len, (k + 1) * seq_len)`` of every stream, row ``b`` of every
batch belongs to stream ``b``. Only the tail of each stream is padding (sample weight 0).

This module needs only numpy; TensorFlow is imported by :meth:`PackedDocuments.dataset` alone.
"""
from __future__ import annotations

import heapq
from typing import Optional, Sequence

import numpy as np

__all__ = ["PackedDocuments", "pack_documents"]


class PackedDocuments:
    """The result of :func:`pack_documents`.

    Batch-major arrays (ready for ``model.fit(..., batch_size=batch_size, shuffle=False)``; rows
    ``[k * batch_size, (k + 1) * batch_size)`` are batch ``k`` and row ``k * batch_size + b`` is
    stream ``b``):

    - ``inputs``: ``[num_batches * batch_size, seq_len, *feature_shape]``
    - ``resets``: ``[num_batches * batch_size, seq_len]`` bool, True at the first step of every
      document and at the first padding step of every stream's tail
    - ``targets``: like ``inputs`` (next-step targets) or like the given per-step targets
    - ``sample_weights``: ``[num_batches * batch_size, seq_len]`` float32; 0 on padding and where
      a document has no next step (its last step), 1 elsewhere

    Stream-major views of the same data: ``stream_inputs``, ``stream_resets``, ``stream_targets``,
    ``stream_weights`` with shape ``[batch_size, num_batches * seq_len, ...]``.

    Bookkeeping: ``num_batches``, ``batch_size``, ``seq_len``, ``num_tokens`` (real steps),
    ``num_targets`` (steps with weight > 0), ``stream_lengths`` ([batch_size] real steps per
    stream), ``doc_stream`` / ``doc_offset`` ([num_docs]: the stream and the step inside it where
    each document starts; -1 for empty documents, which are skipped) and ``padding_fraction`` (the
    fraction of all ``num_batches * batch_size * seq_len`` steps that are padding).
    """

    def __init__(self, *, stream_inputs, stream_resets, stream_targets, stream_weights,
                 batch_size, seq_len, stream_lengths, doc_stream, doc_offset):
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.stream_inputs = stream_inputs
        self.stream_resets = stream_resets
        self.stream_targets = stream_targets
        self.stream_weights = stream_weights
        self.stream_lengths = stream_lengths
        self.doc_stream = doc_stream
        self.doc_offset = doc_offset
        self.num_batches = stream_inputs.shape[1] // self.seq_len
        self.num_tokens = int(stream_lengths.sum())
        self.num_targets = int(np.count_nonzero(stream_weights))
        total = self.num_batches * self.batch_size * self.seq_len
        self.padding_fraction = 1.0 - self.num_tokens / total if total else 0.0
        self.inputs = self._batch_major(stream_inputs)
        self.resets = self._batch_major(stream_resets)
        self.targets = self._batch_major(stream_targets)
        self.sample_weights = self._batch_major(stream_weights)

    def _batch_major(self, a):
        # [B, K*T, ...] -> [B, K, T, ...] -> [K, B, T, ...] -> [K*B, T, ...]
        B, K, T = self.batch_size, self.num_batches, self.seq_len
        a = a.reshape((B, K, T) + a.shape[2:])
        a = np.swapaxes(a, 0, 1)
        return np.ascontiguousarray(a.reshape((K * B, T) + a.shape[3:]))

    def __len__(self):
        return self.num_batches

    def batch(self, k):
        """Batch ``k`` as ``((inputs, resets), targets, sample_weights)`` numpy arrays."""
        if not -self.num_batches <= k < self.num_batches:
            raise IndexError(f"batch index {k} out of range for {self.num_batches} batches")
        k %= self.num_batches
        s = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return ((self.inputs[s], self.resets[s]), self.targets[s], self.sample_weights[s])

    def dataset(self, resets_dtype="bool"):
        """A ``tf.data.Dataset`` of the batches in stream order.

        Element ``k`` is ``((inputs, resets), targets, sample_weights)`` of batch ``k``, each with
        the static batch dimension ``batch_size`` (stateful layers need it). Pass it to
        ``model.fit`` / ``model.evaluate`` of a model whose inputs are ``[tokens, resets]``.
        ``resets_dtype``: the dtype the resets come in (bool, or a number type for 0/1).

        For training under a ``tf.distribute`` strategy use :meth:`distribute` instead.
        """
        return self._slices(0, self.batch_size, 1, resets_dtype)

    def _slices(self, first, rows, groups, resets_dtype):
        """Dataset of [rows] stream rows starting at ``first``, cut into ``groups`` consecutive
        elements of ``rows // groups`` rows per batch: element ``k * groups + j`` holds streams
        ``first + j * (rows // groups) ...`` of batch ``k``."""
        import tensorflow as tf

        resets_dtype = getattr(resets_dtype, "as_numpy_dtype", resets_dtype)  # tf.DType too
        try:
            kind = np.dtype(resets_dtype).kind
        except TypeError:
            kind = None
        if kind not in ("b", "i", "u", "f"):
            raise ValueError("PackedDocuments: `resets_dtype` must be bool or a number type (0/1), "
                             f"got {resets_dtype!r}")

        K, T, n = self.num_batches, self.seq_len, rows // groups

        def split(a):  # [K*B, T, ...] -> [K*groups, n, T, ...] for the chosen rows
            a = a.reshape((K, self.batch_size, T) + a.shape[2:])[:, first:first + rows]
            return np.ascontiguousarray(a).reshape((K * groups, n, T) + a.shape[3:])

        return tf.data.Dataset.from_tensor_slices(
            ((split(self.inputs), split(self.resets).astype(resets_dtype)), split(self.targets),
             split(self.sample_weights)))

    def replica_streams(self, replica_id, num_replicas):
        """The streams replica ``replica_id`` of ``num_replicas`` owns: ``range(g * b, (g + 1) *
        b)`` with ``b = batch_size // num_replicas`` and ``g = replica_id`` (the sharding rule of
        :meth:`distribute`; replica ids as ``tf.distribute``'s ``replica_id_in_sync_group``)."""
        b = self._per_replica(num_replicas)
        if not 0 <= replica_id < num_replicas:
            raise ValueError(f"replica_streams: `replica_id` must be in [0, {num_replicas}), "
                             f"received {replica_id}")
        return range(replica_id * b, (replica_id + 1) * b)

    def _per_replica(self, num_replicas):
        if num_replicas < 1 or self.batch_size % num_replicas:
            raise ValueError(
                f"PackedDocuments: batch_size (streams) = {self.batch_size} must be a multiple of "
                f"the number of replicas ({num_replicas}), so that every replica owns the same "
                f"number of whole streams; pack with batch_size = a multiple of {num_replicas}")
        return self.batch_size // num_replicas

    def distribute(self, strategy, resets_dtype="int32"):
        """The batches as a distributed dataset for ``model.fit`` under ``strategy`` (any
        ``tf.distribute`` strategy: MirroredStrategy, MultiWorkerMirroredStrategy, ...).

        Sharding rule: with ``R = strategy.num_replicas_in_sync`` replicas and ``b = batch_size /
        R``, the replica whose ``replica_id_in_sync_group`` is ``g`` gets streams ``[g * b, (g +
        1) * b)`` of **every** batch, so a stream never changes replica and each replica's
        stateful layers carry the state of its own streams from batch to batch. (A dataset sharded
        by batches, like ``tf.data``'s multi-worker auto-sharding, would hand stream b to another
        worker at every batch and carry each row's state into a foreign stream.) Worker ``w`` with
        ``L`` local replicas reads only its own ``L * b`` streams: its replicas are ``w * L ...
        w * L + L - 1``.

        Build the model inside ``strategy.scope()`` with the per-replica batch size ``b``
        (``keras.Input(batch_shape=(b, seq_len))``): each replica runs the model on its b rows.
        Every element is ``((inputs, resets), targets, sample_weights)``; ``resets`` come as
        ``resets_dtype`` (default int32 0/1), not bool: Keras' ``fit`` under a strategy averages
        the first batch across replicas before building (``AddN``, which has no bool kernel), so
        bool data fails there before any layer runs. A ``keras.Input(dtype="bool")`` for the
        resets is fine: the model casts the 0/1 numbers back to bool. Use it with
        ``model.fit(packed.distribute(strategy), steps_per_epoch=packed.num_batches)``.
        """
        num_replicas = strategy.num_replicas_in_sync
        b = self._per_replica(num_replicas)
        if len(strategy.extended.worker_devices) == num_replicas:
            # One worker: tf.distribute cuts every global batch into consecutive slices of b
            # rows, slice g to replica g, which is the rule; the result has num_batches steps
            # (what Keras' fit counts an epoch by).
            return strategy.experimental_distribute_dataset(self.dataset(resets_dtype))

        def make(context):
            local = num_replicas // context.num_input_pipelines  # replicas on this worker
            first = context.input_pipeline_id * local * b
            # element k * local + j is batch k of local replica j: tf.distribute hands a
            # worker's consecutive elements round-robin to its local replicas
            return self._slices(first, local * b, local, resets_dtype)

        return strategy.distribute_datasets_from_function(make)

    def __repr__(self):
        return (f"PackedDocuments(batch_size={self.batch_size}, seq_len={self.seq_len}, "
                f"num_batches={self.num_batches}, num_tokens={self.num_tokens}, "
                f"padding_fraction={self.padding_fraction:.4f})")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"pack_documents: `{name}` must be a positive integer, "
                         f"received {name}={value!r}")
    return int(value)


def _as_arrays(name, seqs, dtype):
    arrays = []
    for i, d in enumerate(seqs):
        a = np.asarray(d, dtype=dtype)
        if a.ndim == 0:
            raise ValueError(f"pack_documents: `{name}[{i}]` must be a sequence (rank >= 1: [L] "
                             f"token ids or [L, F] features), received a scalar {d!r}")
        arrays.append(a)
    if not arrays:
        raise ValueError(f"pack_documents: `{name}` is empty; expected at least one document")
    feature_shape = arrays[0].shape[1:]
    for i, a in enumerate(arrays):
        if a.shape[1:] != feature_shape:
            raise ValueError(
                f"pack_documents: every element of `{name}` must have the same shape after the "
                f"length axis; {name}[0] has shape {arrays[0].shape} but {name}[{i}] has shape "
                f"{a.shape}")
    if dtype is None:
        non_empty = [a for a in arrays if a.size]
        dtype = np.result_type(*non_empty) if non_empty else arrays[0].dtype
        arrays = [a.astype(dtype, copy=False) for a in arrays]
    return arrays, feature_shape, np.dtype(dtype)


def _assign_streams(lengths, batch_size):
    """Longest-first greedy: each document goes to the currently shortest stream.

    Returns (doc_stream [N], stream_totals [B]); empty documents get stream -1.
    """
    doc_stream = np.full(len(lengths), -1, dtype=np.int64)
    heap = [(0, b) for b in range(batch_size)]  # (total length, stream); ties -> lower stream
    order = sorted((i for i in range(len(lengths)) if lengths[i] > 0),
                   key=lambda i: (-lengths[i], i))
    for i in order:
        total, b = heapq.heappop(heap)
        doc_stream[i] = b
        heapq.heappush(heap, (total + int(lengths[i]), b))
    totals = np.zeros(batch_size, dtype=np.int64)
    for total, b in heap:
        totals[b] = total
    return doc_stream, totals


def pack_documents(docs: Sequence, batch_size: int, seq_len: int, *,
                   targets: Optional[Sequence] = None, pad_value=0, target_pad_value=None,
                   dtype=None, target_dtype=None) -> PackedDocuments:
    """Lay variable-length documents end to end into ``batch_size`` balanced streams.

    Args:
      docs: a sequence of documents, each an array-like of shape ``[L]`` (token ids) or
        ``[L, *feature_shape]`` (features); all with the same feature shape. Empty documents are
        skipped.
      batch_size: number of streams (the batch size of the stateful model).
      seq_len: steps per batch; the streams are padded at the tail to a multiple of it.
      targets: optional per-step targets aligned with ``docs`` (``targets[i]`` has length
        ``len(docs[i])``); every real step then gets weight 1. When None (the default) the
        targets are the next step of the same document and the last step of every document gets
        weight 0 (no target crosses a document boundary).
      pad_value: value of padded input steps. ``target_pad_value`` (default ``pad_value``) of
        padded / missing targets.
      dtype, target_dtype: dtypes of the inputs / targets arrays (default: the documents' own).

    Documents are assigned longest first, each to the stream with the smallest total so far
    (ties: the lowest stream index); inside a stream they keep their order in ``docs``. The
    first step of every document has ``resets=True``; there is no padding between documents.
    The tail padding of a stream starts with a reset too, as if it were a document of its own:
    a forward direction never carries padding into anything, and a backward direction
    (``go_backwards``, the backward half of a Bidirectional) starts the stream's last document
    from a zero state instead of from the state the padding left.

    Returns:
      a :class:`PackedDocuments` (numpy arrays, a ``dataset()`` method, ``padding_fraction``).
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    seq_len = _check_positive_int("seq_len", seq_len)
    if isinstance(docs, (str, bytes)) or not hasattr(docs, "__len__"):
        raise TypeError("pack_documents: `docs` must be a sequence of documents (arrays of token "
                        f"ids or [L, F] features), received {type(docs).__name__}")
    arrays, feature_shape, in_dtype = _as_arrays("docs", docs, dtype)
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)

    if targets is not None:
        if len(targets) != len(arrays):
            raise ValueError(f"pack_documents: `targets` must have one entry per document: "
                             f"expected {len(arrays)}, received {len(targets)}")
        tgt_arrays, tgt_shape, tgt_dtype = _as_arrays("targets", targets, target_dtype)
        for i, (a, t) in enumerate(zip(arrays, tgt_arrays)):
            if len(t) != len(a):
                raise ValueError(f"pack_documents: targets[{i}] must have the length of "
                                 f"docs[{i}] ({len(a)}), received length {len(t)}")
    else:
        tgt_arrays, tgt_shape = None, feature_shape
        tgt_dtype = np.dtype(target_dtype) if target_dtype is not None else in_dtype

    if lengths.sum() == 0:
        raise ValueError("pack_documents: all documents are empty; nothing to pack")

    doc_stream, totals = _assign_streams(lengths, batch_size)
    num_batches = int(-(-int(totals.max()) // seq_len))
    steps = num_batches * seq_len
    if target_pad_value is None:
        target_pad_value = pad_value

    s_inputs = np.full((batch_size, steps) + feature_shape, pad_value, dtype=in_dtype)
    s_targets = np.full((batch_size, steps) + tgt_shape, target_pad_value, dtype=tgt_dtype)
    s_resets = np.zeros((batch_size, steps), dtype=bool)
    s_weights = np.zeros((batch_size, steps), dtype=np.float32)
    doc_offset = np.full(len(arrays), -1, dtype=np.int64)
    fill = np.zeros(batch_size, dtype=np.int64)

    for i, a in enumerate(arrays):  # original order inside each stream
        b = doc_stream[i]
        if b < 0:
            continue
        p, n = int(fill[b]), len(a)
        doc_offset[i] = p
        s_inputs[b, p:p + n] = a
        s_resets[b, p] = True
        if tgt_arrays is None:
            s_targets[b, p:p + n - 1] = a[1:]
            s_weights[b, p:p + n - 1] = 1.0
        else:
            s_targets[b, p:p + n] = tgt_arrays[i]
            s_weights[b, p:p + n] = 1.0
        fill[b] = p + n
    for b in range(batch_size):  # the tail padding is cut off like a document of its own
        if fill[b] < steps:
            s_resets[b, fill[b]] = True

    return PackedDocuments(stream_inputs=s_inputs, stream_resets=s_resets,
                           stream_targets=s_targets, stream_weights=s_weights,
                           batch_size=batch_size, seq_len=seq_len, stream_lengths=fill,
                           doc_stream=doc_stream, doc_offset=doc_offset)
