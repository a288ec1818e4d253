"""Shared helpers for the resetlstm test suite.

TensorFlow and resetlstm are imported lazily (inside the helpers), so the numpy reference
self-checks run even when the op library has not been built.
"""
import os
import re
import sys

import numpy as np
import pytest

# resetlstm is the installed package (or, for in-tree development, PYTHONPATH=python after
# tools/dev-build); the tests never put the source tree on the path themselves.
_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the slow tests (tensors over 2^31 elements) and fuzz with "
                          "10x the examples")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs only with --slow (minutes, many GB of memory)")
    try:
        from hypothesis import settings
    except ImportError:  # the hypothesis tests then skip themselves
        return
    settings.register_profile("resetlstm", max_examples=2000, deadline=None, derandomize=True,
                              print_blob=True)
    settings.register_profile("resetlstm-slow", max_examples=20000, deadline=None,
                              print_blob=True)
    settings.load_profile("resetlstm-slow" if config.getoption("--slow") else "resetlstm")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def lib():
    """The resetlstm package (imported on first use; fails loudly if the build is missing)."""
    import resetlstm
    return resetlstm


# RESETLSTM_TEST_WITHOUT_TF=1 keeps TensorFlow out of the test process (tools/sanitize runs the
# numpy-only tests against a sanitizer build of _native): tests that need TF then skip.
if os.environ.get("RESETLSTM_TEST_WITHOUT_TF") == "1":
    sys.modules["tensorflow"] = None


def tf_():
    """TensorFlow, or a skip when this process runs without it."""
    try:
        import tensorflow as tf
    except ImportError as e:
        pytest.skip(f"needs TensorFlow, which this process runs without ({e})")
    return tf


# --------------------------------------------------------------------------- problems

def random_weights(rng, I, H, dtype=np.float64, scale=0.5):
    kernel = rng.uniform(-scale, scale, (I, 4 * H)).astype(dtype)
    recurrent_kernel = rng.uniform(-scale, scale, (H, 4 * H)).astype(dtype)
    bias = rng.uniform(-scale, scale, (4 * H,)).astype(dtype)
    return kernel, recurrent_kernel, bias


def random_resets(rng, B, T, p=0.3):
    """Random resets that always include: a reset at t=0 (row 1), consecutive resets (row 1),
    a row reset at every step (row 0) and, with B >= 4, a row with no reset (row 3)."""
    r = rng.random((B, T)) < p
    if T == 0:
        return r
    if B >= 1:
        r[0, :] = True
    if B >= 2:
        r[1, :] = False
        r[1, 0] = True
        if T >= 4:
            r[1, 2:4] = True
    if B >= 3 and T >= 2:
        r[2, 0] = False
        r[2, T - 1] = True
    if B >= 4:
        r[3, :] = False
    return r


def random_mask(rng, B, T, p=0.7):
    """Random mask (True = step used) including: masked t=0 (row 1 and 2), a fully masked row
    (the last row, when B >= 3) and an unmasked t=0 (row 0)."""
    m = rng.random((B, T)) < p
    if T == 0:
        return m
    if B >= 1:
        m[0, 0] = True
    if B >= 2:
        m[1, 0] = False
        m[1, 1:] = True
        if T >= 3:
            m[1, 2] = False
    if B >= 3:
        m[2, 0] = False
        m[B - 1, :] = False
    return m


def random_dropout_mask(rng, B, H, rate=0.4, dtype=np.float64):
    """An inverted-dropout mask [B, H]: 0 with probability `rate`, else 1/(1-rate)."""
    keep = rng.random((B, H)) >= rate
    return (keep / (1.0 - rate)).astype(dtype)


def make_problem(seed, B, T, I, H, dtype=np.float64, resets=False, state=False, mask=False,
                 upstream=("outputs", "h", "c"), dropout=False):
    """Batch-major problem dict (numpy): inputs, kernel, recurrent_kernel, bias, resets, h0, c0,
    mask, dropout (the recurrent dropout mask [B, H]), d_outputs, d_h, d_c (missing ones None)."""
    rng = np.random.default_rng(seed)
    kernel, recurrent_kernel, bias = random_weights(rng, I, H, dtype)
    p = dict(
        inputs=rng.uniform(-1.0, 1.0, (B, T, I)).astype(dtype),
        kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias,
        resets=random_resets(rng, B, T) if resets else None,
        h0=rng.uniform(-0.8, 0.8, (B, H)).astype(dtype) if state else None,
        c0=rng.uniform(-1.0, 1.0, (B, H)).astype(dtype) if state else None,
        mask=random_mask(rng, B, T) if mask else None,
    )
    # drawn after the others so that adding it leaves every other array of a seed unchanged
    p["dropout"] = None
    p["d_outputs"] = rng.normal(size=(B, T, H)).astype(dtype) if "outputs" in upstream else None
    p["d_h"] = rng.normal(size=(B, H)).astype(dtype) if "h" in upstream else None
    p["d_c"] = rng.normal(size=(B, H)).astype(dtype) if "c" in upstream else None
    if dropout:
        p["dropout"] = random_dropout_mask(rng, B, H, dtype=dtype)
    return p


def make_gru_problem(seed, B, T, I, H, dtype=np.float64, reset_after=True, resets=False,
                     state=False, mask=False, upstream=("outputs", "h"), dropout=False):
    """A make_problem dict for the GRU: kernel [I, 3H], recurrent_kernel [H, 3H], bias [2, 3H]
    (reset_after) or [3H]; no c0 / d_c; "reset_after" recorded."""
    rng = np.random.default_rng(seed)
    scale = 0.5
    p = dict(
        inputs=rng.uniform(-1.0, 1.0, (B, T, I)).astype(dtype),
        kernel=rng.uniform(-scale, scale, (I, 3 * H)).astype(dtype),
        recurrent_kernel=rng.uniform(-scale, scale, (H, 3 * H)).astype(dtype),
        bias=rng.uniform(-scale, scale, (2, 3 * H) if reset_after else (3 * H,)).astype(dtype),
        resets=random_resets(rng, B, T) if resets else None,
        h0=rng.uniform(-0.8, 0.8, (B, H)).astype(dtype) if state else None,
        mask=random_mask(rng, B, T) if mask else None,
        reset_after=reset_after, c0=None, d_c=None,
    )
    p["d_outputs"] = rng.normal(size=(B, T, H)).astype(dtype) if "outputs" in upstream else None
    p["d_h"] = rng.normal(size=(B, H)).astype(dtype) if "h" in upstream else None
    p["dropout"] = random_dropout_mask(rng, B, H, dtype=dtype) if dropout else None
    return p


def document_segments(resets):
    """(b, start, stop) of every document in resets [B, T] (a document starts at each reset and
    at step 0)."""
    B, T = resets.shape
    for b in range(B):
        starts = [0] + [t for t in range(1, T) if resets[b, t]]
        for s, e in zip(starts, starts[1:] + [T]):
            yield b, s, e


def gru_weights_to_torch(kernel, recurrent_kernel, bias):
    """Keras GRU weights (gates z, r, h; bias [2, 3H] with reset_after) as torch.nn.GRU's
    (weight_ih [3H, I], weight_hh [3H, H], bias_ih, bias_hh; gates r, z, n)."""
    def reorder(w):  # [..., 3H] z, r, h -> r, z, n
        z, r, n = np.split(w, 3, axis=-1)
        return np.concatenate([r, z, n], axis=-1)

    return (reorder(kernel).T.copy(), reorder(recurrent_kernel).T.copy(),
            reorder(bias[0]).copy(), reorder(bias[1]).copy())


def gru_reference_for(p):
    """Float64 GRU reference forward + BPTT for a make_gru_problem dict: ((outputs, h_T), grads
    by name: inputs, kernel, recurrent_kernel, bias, h0)."""
    from reference_gru import gru_reference_backward, gru_reference_forward
    args = (p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"], p["resets"], p["h0"],
            p["mask"])
    out = gru_reference_forward(*args, dropout=p["dropout"], reset_after=p["reset_after"])
    grads = gru_reference_backward(*args, p["d_outputs"], p["d_h"], dropout=p["dropout"],
                                   reset_after=p["reset_after"])
    return out, grads


def reference_for(p):
    """Float64 reference forward + BPTT for a make_problem dict."""
    from reference import reference_forward_backward
    return reference_forward_backward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                      p["resets"], p["h0"], p["c0"], p["mask"],
                                      p["d_outputs"], p["d_h"], p["d_c"],
                                      dropout=p.get("dropout"))


# --------------------------------------------------------------------------- comparisons

def tolerance(dtype):
    """(rtol, atol-relative-to-scale) for a dtype."""
    return (1e-10, 1e-10) if np.dtype(dtype) == np.float64 else (1e-5, 1e-5)


def assert_close(actual, expected, dtype, name="", factor=1.0):
    """allclose with atol scaled by max(1, max|expected|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    rtol, atol = tolerance(dtype)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol * factor, atol=atol * factor * scale,
                               err_msg=name)


# --------------------------------------------------------------------------- running the op

DIFF_NAMES = ("inputs", "kernel", "recurrent_kernel", "bias", "h0", "c0")


def run_reset_lstm(mode, inputs, kernel, recurrent_kernel, bias, resets=None, h0=None, c0=None,
                   mask=None, time_major=False, d_outputs=None, d_h=None, d_c=None,
                   unconnected_zero=False, dropout=None):
    """Call resetlstm.reset_lstm eagerly (mode='eager') or inside a tf.function
    (mode='function'), with loss = sum(outputs*d_outputs) + sum(h_T*d_h) + sum(c_T*d_c)
    (terms with a None upstream are left out of the loss).

    All arrays are passed in the layout given (time-major when time_major=True).
    Returns ((outputs, h_T, c_T) as numpy, grads dict name -> numpy or None, raw tensors).
    """
    tf = tf_()
    rl = lib()

    def conv(a):
        return None if a is None else tf.convert_to_tensor(a)

    tensors = dict(inputs=conv(inputs), kernel=conv(kernel), recurrent_kernel=conv(recurrent_kernel),
                   bias=conv(bias), h0=conv(h0), c0=conv(c0))
    extra = dict(resets=conv(resets), mask=conv(mask), dropout=conv(dropout))
    ups = dict(outputs=conv(d_outputs), h=conv(d_h), c=conv(d_c))
    want_grads = any(v is not None for v in ups.values())

    def body(t, e, u):
        with tf.GradientTape() as tape:
            for v in t.values():
                if v is not None:
                    tape.watch(v)
            initial_state = None if t["h0"] is None else (t["h0"], t["c0"])
            y, h, c = rl.reset_lstm(t["inputs"], t["kernel"], t["recurrent_kernel"], t["bias"],
                                    resets=e["resets"], initial_state=initial_state,
                                    mask=e["mask"], time_major=time_major,
                                    recurrent_dropout_mask=e["dropout"])
            loss = tf.constant(0.0, dtype=y.dtype)
            for out, up in ((y, u["outputs"]), (h, u["h"]), (c, u["c"])):
                if up is not None:
                    loss = loss + tf.reduce_sum(out * up)
        grads = {}
        if want_grads:
            names = [n for n in DIFF_NAMES if t[n] is not None]
            kw = {}
            if unconnected_zero:
                kw["unconnected_gradients"] = tf.UnconnectedGradients.ZERO
            gl = tape.gradient(loss, [t[n] for n in names], **kw)
            grads = dict(zip(names, gl))
        return (y, h, c), grads

    if mode == "eager":
        outs, grads = body(tensors, extra, ups)
    elif mode == "function":
        outs, grads = tf.function(body)(tensors, extra, ups)
    else:
        raise ValueError(mode)
    np_outs = tuple(o.numpy() for o in outs)
    np_grads = {k: (None if v is None else v.numpy()) for k, v in grads.items()}
    return np_outs, np_grads, outs


def op_on_problem(mode, p, time_major=False, resets_dtype=None, mask_dtype=None, dtype=None,
                  unconnected_zero=False):
    """run_reset_lstm on a batch-major make_problem dict; results converted back to batch-major."""
    from reference import to_batch_major, to_time_major
    tm = to_time_major if time_major else (lambda a: a)

    def flags(a, dt):
        if a is None:
            return None
        a = tm(a)
        return a if dt is None else np.asarray(a).astype(dt)

    (y, h, c), grads, raw = run_reset_lstm(
        mode, tm(p["inputs"]), p["kernel"], p["recurrent_kernel"], p["bias"],
        resets=flags(p["resets"], resets_dtype), h0=p["h0"], c0=p["c0"],
        mask=flags(p["mask"], mask_dtype), time_major=time_major,
        d_outputs=tm(p["d_outputs"]), d_h=p["d_h"], d_c=p["d_c"],
        unconnected_zero=unconnected_zero, dropout=p.get("dropout"))
    if time_major:
        y = to_batch_major(y)
        if grads.get("inputs") is not None:
            grads["inputs"] = to_batch_major(grads["inputs"])
    return (y, h, c), grads


def check_against_reference(p, outs, grads, dtype, check_grads=True, factor=1.0):
    (ry, rh, rc), rg = reference_for(p)
    y, h, c = outs
    assert y.dtype == np.dtype(dtype) and h.dtype == np.dtype(dtype) and c.dtype == np.dtype(dtype)
    assert_close(y, ry, dtype, "outputs", factor)
    assert_close(h, rh, dtype, "h_T", factor)
    assert_close(c, rc, dtype, "c_T", factor)
    if not check_grads:
        return
    for name in DIFF_NAMES:
        if name in ("h0", "c0") and p[name] is None:
            continue
        g = grads.get(name)
        assert g is not None, f"no gradient for {name}"
        assert g.dtype == np.dtype(dtype), f"{name} grad dtype {g.dtype}"
        assert_close(g, rg[name], dtype, f"d_{name}", factor)


# --------------------------------------------------------------------------- error messages

def core_message(exc):
    """The error text without TF's graph/trace decorations ('File ...' lines and the quoted
    source lines under them, node names, node defs, function names), so that matching on an
    argument name cannot hit the caller's source code (e.g. `reset_lstm(inputs, kernel, ...)`
    quoted from the test or from ops.py)."""
    msg = getattr(exc, "message", None) or str(exc)
    lines = []
    skip_indent = None
    for line in msg.splitlines():
        s = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            # the quoted source line that follows a 'File "..."' line is indented deeper
            if s and indent > skip_indent:
                skip_indent = None
                continue
            skip_indent = None
        if s.startswith("File \""):
            skip_indent = indent
            continue
        if s.startswith("Detected at node") or s.startswith("Graph execution error") or \
                s.startswith("Node:") or s.startswith("in user code:"):
            continue
        lines.append(line)
    text = "\n".join(lines)
    # shape-function errors quote the node def: "for '{{node X}} = Op[attrs](in0, in1, ...)'"
    text = re.sub(r"= \w+\[[^\]]*\]\([^)]*\)", " ", text)
    text = re.sub(r"\{\{[^}]*\}\}", " ", text)
    text = re.sub(r"\[\[[^\]]*\]\]", " ", text)
    text = re.sub(r"\[Op:[^\]]*\]", " ", text)
    text = re.sub(r" name: \S*$", " ", text)
    return text


@pytest.fixture(params=["eager", "function"])
def mode(request):
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param
