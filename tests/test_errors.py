"""Bad input raises ValueError / InvalidArgumentError naming the argument (and, for shape errors,
the received dims): eagerly, inside a tf.function with None dims (static shape checks cannot
fire, the kernel must check), and with unknown ranks."""
import re

import numpy as np
import pytest

from conftest import core_message, lib, tf_

B, T, I, H = 3, 5, 6, 2          # 4H = 8; "received" dims below avoid {2, 3, 5, 6, 8}
F32 = np.float32


def base(dtype=F32):
    rng = np.random.default_rng(0)
    return dict(
        inputs=rng.uniform(-1, 1, (B, T, I)).astype(dtype),
        kernel=rng.uniform(-0.5, 0.5, (I, 4 * H)).astype(dtype),
        recurrent_kernel=rng.uniform(-0.5, 0.5, (H, 4 * H)).astype(dtype),
        bias=rng.uniform(-0.5, 0.5, (4 * H,)).astype(dtype),
        resets=None, mask=None, h0=None, c0=None, dropout=None, time_major=False,
    )


def z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


def flags(*shape):
    return np.zeros(shape, bool)


KERNEL = r"(?<!recurrent_)kernel"
STATE_H = r"initial_state|h0"
STATE_C = r"initial_state|c0"


def RANK(n):
    """The received rank, e.g. 'rank 2' / 'rank: 2' / 'ndim=2'."""
    return r"(rank|ndim)\W{0,3}%d\b" % n

# (id, overrides, argument regex, received-dims regex or None)
CASES = [
    # wrong ranks
    ("inputs_rank2", dict(inputs=z(B, T)), r"inputs", RANK(2)),
    ("inputs_rank4", dict(inputs=z(B, T, I, 1)), r"inputs", RANK(4)),
    ("kernel_rank1", dict(kernel=z(I * 4 * H)), KERNEL, RANK(1)),
    ("kernel_rank3", dict(kernel=z(I, 4 * H, 1)), KERNEL, RANK(3)),
    ("recurrent_kernel_rank1", dict(recurrent_kernel=z(H * 4 * H)), r"recurrent_kernel",
     RANK(1)),
    ("recurrent_kernel_rank3", dict(recurrent_kernel=z(H, 4 * H, 1)), r"recurrent_kernel",
     RANK(3)),
    ("bias_rank2", dict(bias=z(1, 4 * H)), r"bias", RANK(2)),
    ("bias_rank0", dict(bias=z()), r"bias", RANK(0)),
    ("resets_rank1", dict(resets=flags(B)), r"resets", RANK(1)),
    ("resets_rank3", dict(resets=flags(B, T, 1)), r"resets", RANK(3)),
    ("mask_rank1", dict(mask=flags(T)), r"mask", RANK(1)),
    ("mask_rank3", dict(mask=flags(B, T, 1)), r"mask", RANK(3)),
    ("h0_rank1", dict(h0=z(H), c0=z(B, H)), STATE_H, RANK(1)),
    ("h0_rank3", dict(h0=z(B, H, 1), c0=z(B, H)), STATE_H, RANK(3)),
    ("c0_rank1", dict(h0=z(B, H), c0=z(H)), STATE_C, RANK(1)),
    ("c0_rank3", dict(h0=z(B, H), c0=z(1, B, H)), STATE_C, RANK(3)),
    # inconsistent sizes
    ("I_mismatch_kernel", dict(kernel=z(7, 4 * H)), KERNEL, r"\b7\b"),
    ("I_mismatch_inputs", dict(inputs=z(B, T, 9)), r"inputs|" + KERNEL, r"\b9\b"),
    ("H_mismatch", dict(recurrent_kernel=z(7, 28)), r"recurrent_kernel", r"\b(7|28)\b"),
    ("recurrent_kernel_cols", dict(recurrent_kernel=z(H, 9)), r"recurrent_kernel", r"\b9\b"),
    ("recurrent_kernel_rows", dict(recurrent_kernel=z(11, 4 * H)), r"recurrent_kernel",
     r"\b11\b"),
    ("recurrent_kernel_square", dict(recurrent_kernel=z(H, H)), r"recurrent_kernel",
     r"\[2, 2\]|\[\?, \?\]"),
    ("kernel_cols_not_4x", dict(kernel=z(I, 10)), KERNEL, r"\b10\b"),
    ("bias_not_4H", dict(bias=z(9)), r"bias", r"\b9\b"),
    ("bias_H", dict(bias=z(H)), r"bias", r"\[2\]|\[\?\]"),
    ("resets_wrong_B", dict(resets=flags(9, T)), r"resets", r"\b9\b"),
    ("resets_wrong_T", dict(resets=flags(B, 11)), r"resets", r"\b11\b"),
    ("resets_time_major_transposed",
     dict(inputs=z(T, B, I), time_major=True, resets=flags(B, T)), r"resets", None),
    ("resets_batch_major_given_time_major",
     dict(resets=flags(T, B)), r"resets", None),
    ("mask_wrong_B", dict(mask=flags(9, T)), r"mask", r"\b9\b"),
    ("mask_wrong_T", dict(mask=flags(B, 11)), r"mask", r"\b11\b"),
    ("mask_time_major_transposed",
     dict(inputs=z(T, B, I), time_major=True, mask=flags(B, T)), r"mask", None),
    ("h0_wrong_B", dict(h0=z(9, H), c0=z(B, H)), STATE_H, r"\b9\b"),
    ("h0_wrong_H", dict(h0=z(B, 7), c0=z(B, H)), STATE_H, r"\b7\b"),
    ("c0_wrong_B", dict(h0=z(B, H), c0=z(11, H)), STATE_C, r"\b11\b"),
    ("c0_wrong_H", dict(h0=z(B, H), c0=z(B, 13)), STATE_C, r"\b13\b"),
    ("dropout_rank1", dict(dropout=z(H)), r"recurrent_dropout_mask", RANK(1)),
    ("dropout_rank3", dict(dropout=z(B, H, 1)), r"recurrent_dropout_mask", RANK(3)),
    ("dropout_wrong_B", dict(dropout=z(9, H)), r"recurrent_dropout_mask", r"\b9\b"),
    ("dropout_wrong_H", dict(dropout=z(B, 7)), r"recurrent_dropout_mask", r"\b7\b"),
]

DTYPE_CASES = [
    ("kernel_f64", dict(kernel=z(I, 4 * H, dtype=np.float64)), KERNEL),
    ("recurrent_kernel_f64", dict(recurrent_kernel=z(H, 4 * H, dtype=np.float64)),
     r"recurrent_kernel"),
    ("bias_f64", dict(bias=z(4 * H, dtype=np.float64)), r"bias"),
    ("inputs_f64", dict(inputs=z(B, T, I, dtype=np.float64)), r"inputs|" + KERNEL),
    ("h0_f64", dict(h0=z(B, H, dtype=np.float64), c0=z(B, H)), STATE_H),
    ("dropout_f64", dict(dropout=z(B, H, dtype=np.float64)), r"recurrent_dropout_mask"),
]

ERRORS = None


def _errors():
    tf = tf_()
    return (ValueError, tf.errors.InvalidArgumentError)


def _call(mode, args):
    """Call reset_lstm eagerly, or in a tf.function whose signature has None dims
    ('fn_none_dims') or unknown ranks ('fn_unknown_rank')."""
    tf = tf_()
    rl = lib()
    names = [n for n in ("inputs", "kernel", "recurrent_kernel", "bias", "resets", "mask",
                         "h0", "c0", "dropout") if args[n] is not None]
    time_major = args["time_major"]

    def body(*ts):
        a = dict(zip(names, ts))
        st = (a["h0"], a["c0"]) if "h0" in a else None
        return rl.reset_lstm(a["inputs"], a["kernel"], a["recurrent_kernel"], a["bias"],
                             resets=a.get("resets"), mask=a.get("mask"), initial_state=st,
                             time_major=time_major, recurrent_dropout_mask=a.get("dropout"))

    vals = [args[n] for n in names]
    if mode == "eager":
        out = body(*[tf.constant(v) for v in vals])
    else:
        def spec(v):
            shape = None if mode == "fn_unknown_rank" else [None] * np.ndim(v)
            return tf.TensorSpec(shape, tf.as_dtype(v.dtype))
        fn = tf.function(body, input_signature=[spec(v) for v in vals])
        out = fn(*[tf.constant(v) for v in vals])
    return [o.numpy() for o in out]


MODES = ["eager", "fn_none_dims", "fn_unknown_rank"]


@pytest.mark.parametrize("mode", MODES)
def test_valid_input_control(mode):
    """The call paths used below work on valid input (so the failures below are about the bad
    argument), including resets/mask/initial_state and time_major."""
    a = base()
    a.update(resets=flags(B, T), mask=~flags(B, T), h0=z(B, H), c0=z(B, H), dropout=z(B, H) + 2)
    y, h, c = _call(mode, a)
    assert y.shape == (B, T, H) and h.shape == (B, H)
    a.update(inputs=np.swapaxes(a["inputs"], 0, 1).copy(), resets=flags(T, B),
             mask=~flags(T, B), time_major=True)
    y2, h2, c2 = _call(mode, a)
    np.testing.assert_allclose(np.swapaxes(y2, 0, 1), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_shapes(case, mode):
    _, overrides, arg_re, dims_re = case
    a = base()
    a.update(overrides)
    with pytest.raises(_errors()) as info:
        _call(mode, a)
    msg = core_message(info.value)
    assert re.search(arg_re, msg), f"message does not name /{arg_re}/: {msg!r}"
    if dims_re is not None:
        assert re.search(dims_re, msg), f"message lacks received dims /{dims_re}/: {msg!r}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_mixed_dtypes(case, mode):
    tf = tf_()
    _, overrides, arg_re = case
    a = base()
    a.update(overrides)
    # TypeError is also accepted here: it is Python's idiom for a dtype mismatch
    with pytest.raises(_errors() + (TypeError,)) as info:
        _call(mode, a)
    msg = core_message(info.value)
    assert re.search(arg_re, msg), f"message does not name /{arg_re}/: {msg!r}"
    assert re.search(r"float64|double", msg), msg


@pytest.mark.parametrize("mode", ["eager", "fn_none_dims"])
@pytest.mark.parametrize("case", [
    ("x_wrong_I", dict(x=z(B, 7)), r"x_t|inputs|x\b|" + KERNEL, r"\b7\b"),
    ("h_wrong_H", dict(h=z(B, 7)), r"\bh\b|h0|state", r"\b7\b"),
    ("c_wrong_B", dict(c=z(9, H)), r"\bc\b|c0|state", r"\b9\b"),
    ("reset_wrong_B", dict(reset=flags(9)), r"reset", r"\b9\b"),
    ("reset_rank2", dict(reset=flags(B, 1)), r"reset", None),
    ("recurrent_kernel_cols", dict(R=z(H, 9)), r"recurrent_kernel", r"\b9\b"),
], ids=lambda c: c[0] if isinstance(c, tuple) else c)
def test_cell_bad_shapes(case, mode):
    tf = tf_()
    rl = lib()
    _, overrides, arg_re, dims_re = case
    a = base()
    args = dict(x=z(B, I), h=z(B, H), c=z(B, H), K=a["kernel"], R=a["recurrent_kernel"],
                b=a["bias"], reset=None)
    args.update(overrides)
    names = [n for n in ("x", "h", "c", "K", "R", "b", "reset") if args[n] is not None]

    def body(*ts):
        d = dict(zip(names, ts))
        return rl.reset_lstm_cell(d["x"], d["h"], d["c"], d["K"], d["R"], d["b"],
                                  reset=d.get("reset"))

    vals = [tf.constant(args[n]) for n in names]
    with pytest.raises(_errors()) as info:
        if mode == "eager":
            body(*vals)
        else:
            sig = [tf.TensorSpec([None] * v.shape.rank, v.dtype) for v in vals]
            tf.function(body, input_signature=sig)(*vals)
    msg = core_message(info.value)
    assert re.search(arg_re, msg), f"message does not name /{arg_re}/: {msg!r}"
    if dims_re is not None:
        assert re.search(dims_re, msg), f"message lacks received dims /{dims_re}/: {msg!r}"


def test_core_message_strips_trace():
    """The helper used above removes TF's trace decorations (which quote test source locations
    and node names), and keeps the actual message."""
    tf = tf_()

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def recurrent_kernel_fn(recurrent_kernel):
        return tf.reshape(recurrent_kernel, [7, 3])

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        recurrent_kernel_fn(tf.zeros([4, 5]))
    msg = core_message(info.value)
    assert "recurrent_kernel" not in msg
    assert "20 values" in msg

    # trace-time errors quote the source line ("in user code: File ...\n    <source>")
    @tf.function(input_signature=[tf.TensorSpec([2, 3], tf.float32),
                                  tf.TensorSpec([4, 5], tf.float32)])
    def g(recurrent_kernel, mask):
        return tf.matmul(tf.identity(recurrent_kernel, name="resets"), mask)

    with pytest.raises(ValueError) as info:
        g.get_concrete_function()
    msg = core_message(info.value)
    assert "Dimensions must be equal" in msg
    for word in ("recurrent_kernel", "resets", "mask"):
        assert word not in msg, msg


def test_gradient_op_rejects_saved_tensors_of_another_shape():
    """ResetLSTMGrad checks what it receives from the forward against the forward's shapes."""
    tf = tf_()
    from resetlstm.tf import ops
    x, k, r = tf.zeros([2, 3, 4]), tf.zeros([4, 8]), tf.zeros([2, 8])
    y, h, c = tf.zeros([2, 3, 2]), tf.zeros([2, 2]), tf.zeros([2, 2])
    no_flags, no_state = tf.zeros([0], tf.bool), tf.zeros([0])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`gates` has the wrong shape \(\[2, 2, 8\], expected \[2, 3, 8\]\)"):
        ops._ops.reset_lstm_grad(x, k, r, no_flags, no_flags, no_state, no_state, no_state, y,
                                 tf.zeros([2, 2, 8]), y, y, h, c)
