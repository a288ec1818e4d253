"""The TensorFlow variants of the benchmark, each as a pair of tf.functions (fwd, fwd+bwd).

Every variant computes the same function as resetlstm.reset_lstm on the same data (bench/common.py):
- fwd:    outputs [B, T, H] with no GradientTape (inference).
- fwdbwd: forward under a GradientTape, loss = reduce_sum(outputs * upstream) (bfloat16 outputs cast to
          float32 first), gradients with respect to the inputs and every weight; returned in Keras layout
          [dx, dkernel, drecurrent_kernel, dbias] after `to_keras_grads` (which runs outside the timed
          region; as float32 numpy arrays).
All arguments are passed to the tf.functions as tensors/variables (nothing is constant-folded); each
tf.function is traced once per shape and the trace is excluded from the timings.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

F32 = tf.float32


LOSS_SCOPE = "bench_loss"


def _loss(outputs, upstream):
    """reduce_sum(outputs * upstream), in the upstream's dtype (float32): bfloat16 outputs are cast first
    (a no-op for float32 outputs, so the float32 graphs are unchanged)."""
    with tf.name_scope(LOSS_SCOPE):
        return tf.reduce_sum(tf.cast(outputs, upstream.dtype) * upstream)


def _grads_to_float32(g):
    return [np.asarray(tf.cast(t, F32)) for t in g]


class Case:
    """One variant at one shape: fwd()/fwdbwd() run the compiled functions on the bound arguments."""

    def __init__(self, fwd_fn, fwd_args, fwdbwd_fn, fwdbwd_args, to_keras_grads=None, analytic_saved=None):
        self.fwd_fn, self.fwd_args = fwd_fn, fwd_args
        self.fwdbwd_fn, self.fwdbwd_args = fwdbwd_fn, fwdbwd_args
        self.to_keras_grads = to_keras_grads or (lambda g: [np.asarray(t) for t in g])
        self.analytic_saved = analytic_saved  # (bytes, description) or None
        self.probe_saved = None  # optional callable -> bytes measured at runtime

    def fwd(self):
        return self.fwd_fn(*self.fwd_args)

    def fwdbwd(self):
        return self.fwdbwd_fn(*self.fwdbwd_args)

    def graph(self, mode):
        fn, args = (self.fwd_fn, self.fwd_args) if mode == "fwd" else (self.fwdbwd_fn, self.fwdbwd_args)
        return fn.get_concrete_function(*args).graph


# ----------------------------------------------------------------------------------------------
# resetlstm (the op under test)
# ----------------------------------------------------------------------------------------------
def make_resetlstm(resetlstm, d, with_resets, dtype=F32):
    """dtype: of x, kernel, recurrent_kernel and bias (all cast once here, outside the timing; the weights
    are tf.Variables of that dtype and the gradients are taken with respect to those tensors). The upstream
    gradient stays float32 (see _loss)."""
    B, T, _ = d["x"].shape
    H = d["recurrent_kernel"].shape[0]
    x = tf.cast(tf.constant(d["x"]), dtype)
    up = tf.constant(d["upstream"])
    r = tf.constant(d["resets"]) if with_resets else None
    kernel = tf.Variable(tf.cast(d["kernel"], dtype), name="kernel")
    rk = tf.Variable(tf.cast(d["recurrent_kernel"], dtype), name="recurrent_kernel")
    bias = tf.Variable(tf.cast(d["bias"], dtype), name="bias")
    weights = [kernel, rk, bias]

    if with_resets:
        @tf.function
        def fwd(x, r):
            return resetlstm.reset_lstm(x, kernel, rk, bias, resets=r)[0]

        @tf.function
        def fwdbwd(x, r, up):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = resetlstm.reset_lstm(x, kernel, rk, bias, resets=r)[0]
                loss = _loss(out, up)
            return tape.gradient(loss, [x] + weights)

        fa, fba = (x, r), (x, r, up)
    else:
        @tf.function
        def fwd(x):
            return resetlstm.reset_lstm(x, kernel, rk, bias)[0]

        @tf.function
        def fwdbwd(x, up):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = resetlstm.reset_lstm(x, kernel, rk, bias)[0]
                loss = _loss(out, up)
            return tape.gradient(loss, [x] + weights)

        fa, fba = (x,), (x, up)
    analytic = (5 * H * 4 * B * T, "analytic from shapes: 5H float32 values per (b, t) kept by the op "
                                   "for backward (DESIGN/issue figure), not measured")
    case = Case(fwd, fa, fwdbwd, fba, analytic_saved=analytic,
                to_keras_grads=None if dtype == F32 else _grads_to_float32)

    @tf.function
    def probe(*args):
        """fwd+bwd as timed, plus the runtime sizes of the op's extra outputs beyond (outputs, h, c): the
        activations it saves for backward (gates, cells in this version)."""
        with tf.GradientTape() as tape:
            tape.watch(args[0])
            out = resetlstm.reset_lstm(args[0], kernel, rk, bias, resets=args[1] if with_resets else None)[0]
            loss = _loss(out, args[-1])
        grads = tape.gradient(loss, [args[0]] + weights)
        op = out.op
        extra = [t for t in op.outputs[3:] if t.dtype.is_floating]
        with tf.control_dependencies(grads):
            return [tf.size(t, out_type=tf.int64) * t.dtype.size for t in extra], op.type

    def probe_saved():
        sizes, _ = probe(*fba)
        return int(sum(int(s) for s in sizes))

    case.probe_saved = probe_saved
    return case


# ----------------------------------------------------------------------------------------------
# keras.layers.LSTM with the same weights
# ----------------------------------------------------------------------------------------------
def make_keras(keras, d, policy=None):
    """policy: None (float32) or a Keras dtype policy name such as "mixed_bfloat16" (float32 variables and
    inputs, computed in bfloat16, bfloat16 outputs); the layer gets it as dtype=DTypePolicy(policy), the
    global policy is left alone."""
    B, T, I = d["x"].shape
    H = d["recurrent_kernel"].shape[0]
    kwargs = {} if policy is None else {"dtype": keras.mixed_precision.DTypePolicy(policy)}
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, **kwargs)
    layer.build((B, T, I))
    layer.set_weights([d["kernel"], d["recurrent_kernel"], d["bias"]])
    names = [v.path if hasattr(v, "path") else v.name for v in layer.trainable_variables]
    assert len(names) == 3 and "recurrent" in names[1], names  # order kernel, recurrent_kernel, bias
    x = tf.constant(d["x"])
    up = tf.constant(d["upstream"])

    @tf.function
    def fwd(x):
        return layer(x, training=False)[0]

    @tf.function
    def fwdbwd(x, up):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=True)[0]
            loss = _loss(out, up)
        return tape.gradient(loss, [x] + list(layer.trainable_variables))

    case = Case(fwd, (x,), fwdbwd, (x, up), to_keras_grads=None if policy is None else _grads_to_float32)
    case.layer = layer  # keep alive
    return case


# ----------------------------------------------------------------------------------------------
# the naive per-row reset loop users write today
# ----------------------------------------------------------------------------------------------
def naive_reset_lstm(x, resets, kernel, rk, bias):
    """tf.while_loop over T multiplying (h, c) by 1 - resets[:, t]; input projection hoisted out of the
    loop as one GEMM; per-step inputs read from TensorArrays (the efficient idiom, as tf.scan does)."""
    T, I = x.shape[1], x.shape[2]
    H = rk.shape[0]
    B = tf.shape(x)[0]
    xt = tf.transpose(x, [1, 0, 2])  # [T, B, I]
    xw = tf.reshape(tf.matmul(tf.reshape(xt, [-1, I]), kernel), [T, -1, 4 * H]) + bias
    keep = tf.transpose(1.0 - tf.cast(resets, x.dtype))[:, :, None]  # [T, B, 1]
    xw_ta = tf.TensorArray(x.dtype, size=T).unstack(xw)
    keep_ta = tf.TensorArray(x.dtype, size=T).unstack(keep)
    out_ta = tf.TensorArray(x.dtype, size=T)
    h0 = tf.zeros([B, H], x.dtype)

    def body(t, h, c, out_ta):
        k = keep_ta.read(t)
        h, c = h * k, c * k
        z = xw_ta.read(t) + tf.matmul(h, rk)
        zi, zf, zc, zo = tf.split(z, 4, axis=1)
        c = tf.sigmoid(zf) * c + tf.sigmoid(zi) * tf.tanh(zc)
        h = tf.sigmoid(zo) * tf.tanh(c)
        return t + 1, h, c, out_ta.write(t, h)

    _, h, c, out_ta = tf.while_loop(lambda t, *_: t < T, body, (0, h0, h0, out_ta), maximum_iterations=T)
    return tf.transpose(out_ta.stack(), [1, 0, 2]), h, c


def make_naive(d):
    x = tf.constant(d["x"])
    up = tf.constant(d["upstream"])
    r = tf.constant(d["resets"])
    kernel = tf.Variable(d["kernel"], name="kernel")
    rk = tf.Variable(d["recurrent_kernel"], name="recurrent_kernel")
    bias = tf.Variable(d["bias"], name="bias")
    weights = [kernel, rk, bias]

    @tf.function
    def fwd(x, r):
        return naive_reset_lstm(x, r, kernel, rk, bias)[0]

    @tf.function
    def fwdbwd(x, r, up):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = naive_reset_lstm(x, r, kernel, rk, bias)[0]
            loss = _loss(out, up)
        return tape.gradient(loss, [x] + weights)

    return Case(fwd, (x, r), fwdbwd, (x, r, up))


# ----------------------------------------------------------------------------------------------
# tf.raw_ops.BlockLSTM (V1)
# ----------------------------------------------------------------------------------------------
def ifco_to_icfo(w):
    i, f, c, o = np.split(np.asarray(w), 4, axis=-1)
    return np.concatenate([i, c, f, o], axis=-1)


def icfo_to_ifco(w):
    i, c, f, o = np.split(np.asarray(w), 4, axis=-1)
    return np.concatenate([i, f, c, o], axis=-1)


def block_lstm(x, w, b):
    """BlockLSTM V1 on batch-major x: w = [kernel; recurrent_kernel] with columns in gate order i, c, f, o,
    forget_bias = 0 (the +1 lives in b, as in Keras), cell_clip = -1 (off), no peepholes."""
    T = x.shape[1]
    H = w.shape[1] // 4
    B = tf.shape(x)[0]
    zeros = tf.zeros([B, H], x.dtype)
    peep = tf.zeros([H], x.dtype)
    outs = tf.raw_ops.BlockLSTM(seq_len_max=tf.constant(T, tf.int64), x=tf.transpose(x, [1, 0, 2]),
                                cs_prev=zeros, h_prev=zeros, w=w, wci=peep, wcf=peep, wco=peep, b=b,
                                forget_bias=0.0, cell_clip=-1.0, use_peephole=False)
    return tf.transpose(outs[6], [1, 0, 2])  # h: [T, B, H] -> [B, T, H]


def make_block(d):
    I = d["kernel"].shape[0]
    x = tf.constant(d["x"])
    up = tf.constant(d["upstream"])
    # Weights converted once (a BlockLSTM user stores them in this layout); not part of the timing.
    w = tf.Variable(ifco_to_icfo(np.concatenate([d["kernel"], d["recurrent_kernel"]], 0)), name="w")
    b = tf.Variable(ifco_to_icfo(d["bias"]), name="b")

    @tf.function
    def fwd(x):
        return block_lstm(x, w, b)

    @tf.function
    def fwdbwd(x, up):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = block_lstm(x, w, b)
            loss = _loss(out, up)
        return tape.gradient(loss, [x, w, b])

    def to_keras(g):
        dx, dw, db = (np.asarray(t) for t in g)
        dw = icfo_to_ifco(dw)
        return [dx, dw[:I], dw[I:], icfo_to_ifco(db)]

    return Case(fwd, (x,), fwdbwd, (x, up), to_keras_grads=to_keras)


# ----------------------------------------------------------------------------------------------
# the matmul limit
# ----------------------------------------------------------------------------------------------
def make_matmul(n, seed=0):
    rng = np.random.default_rng(seed)
    a = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
    b = tf.constant(rng.standard_normal((n, n), dtype=np.float32))

    @tf.function
    def mm(a, b):
        return tf.matmul(a, b)

    return (lambda: mm(a, b)), 2.0 * n ** 3


# ----------------------------------------------------------------------------------------------
# saved activations, measured from the traced fwd+bwd graph
# ----------------------------------------------------------------------------------------------
_ALIAS_OPS = {"Identity", "Reshape", "ExpandDims", "Squeeze", "StopGradient", "Snapshot"}
_FREE_OPS = {"Placeholder", "ReadVariableOp", "Const", "VarHandleOp", "ZerosLike", "Fill", "Shape"}


def _grad_op(op):
    return op.name.startswith("gradient_tape/") or "/gradient_tape/" in op.name


def _lstm_grad_op(op):
    """A backward op of the LSTM itself (not of the benchmark's loss reduce_sum(outputs * upstream))."""
    return _grad_op(op) and f"/{LOSS_SCOPE}/" not in op.name


def _nbytes(t, iters=1):
    n = t.shape.num_elements()
    if n is None or not t.dtype.is_floating:
        return 0
    return n * t.dtype.size * iters


def saved_bytes_from_graph(graph, T):
    """Bytes of forward tensors that the backward pass of a traced fwd+bwd tf.function reads.

    - Tensors made by forward ops and consumed by ops under the `gradient_tape/` name scope, except the
      gradient of the benchmark's own loss, which reads the outputs (aliasing ops
      such as Reshape/Identity are followed to the tensor that owns the buffer; inputs, variables and
      constants are not counted: they exist anyway).
    - For a forward while loop: every per-step tensor the while-loop gradient accumulates
      (TensorListPushBack in the forward loop body) times T iterations, except variable reads (which
      alias the variable's buffer, so T pushes cost nothing).
    Returns (bytes, details) where details lists (what, bytes).
    """
    counted, details, total = set(), [], 0
    for op in graph.get_operations():
        if _grad_op(op):
            continue
        if op.type in ("While", "StatelessWhile"):
            body = getattr(op, "_body_graph", None)
            if body is None:
                continue
            loop_bytes = 0
            for o in body.get_operations():
                if o.type != "TensorListPushBack":
                    continue
                src = o.inputs[1]
                s = src
                while s.op.type in _ALIAS_OPS and s.op.inputs:
                    s = s.op.inputs[0]
                if s.op.type == "ReadVariableOp":
                    continue
                loop_bytes += _nbytes(src, T)
            if loop_bytes:
                details.append((f"{op.name}: per-step accumulators x {T}", loop_bytes))
                total += loop_bytes
            continue
        for out in op.outputs:
            if not any(_lstm_grad_op(c) for c in out.consumers()):
                continue
            src = out
            while src.op.type in _ALIAS_OPS and src.op.inputs:
                src = src.op.inputs[0]
            if src.op.type in _FREE_OPS or src.name in counted:
                continue
            counted.add(src.name)
            nb = _nbytes(src)
            if src.dtype.is_floating and src.shape.num_elements() is None:
                details.append((f"{src.name} {src.shape}: size unknown statically, not counted", 0))
            if nb:
                details.append((f"{src.name} {src.shape.as_list()}", nb))
                total += nb
    return total, details
