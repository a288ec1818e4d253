"""The bf16 CPU kernels (bfloat16 arguments on a CPU with AVX512-BF16): bf16 GEMM operands,
float32 accumulation and float32 cell state, results and saved activations rounded to bf16.

Checked against the float64 numpy reference on the same (bf16-representable) arguments. The
error bound is relative to each result's largest magnitude: every stored value is rounded once
to bf16 (half-ulp 2^-9 = 2.0e-3 relative) and h is rounded before each recurrent matmul, so a few
roundings add up; measured on an AMD EPYC (Zen 5): <= 9.2e-3 over these problems. The emulated
GEMM (CPUs without AVX512-BF16, RESETLSTM_ISA capped) must meet the same bound."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tensorflow as tf

import resetlstm
from resetlstm.tf import ops

from conftest import DIFF_NAMES, make_problem, reference_for, run_reset_lstm

BF16_BOUND = 1.2e-2
HERE = os.path.dirname(os.path.abspath(__file__))
# RESETLSTM_ISA below avx512_bf16 (the tests run under each cap) keeps the kernels off vdpbf16ps.
CPU_HAS_BF16 = ("avx512_bf16" in open("/proc/cpuinfo").read()
                and os.environ.get("RESETLSTM_ISA", "") in ("", "avx512_bf16"))

SCENARIOS = {
    "plain": dict(),
    "resets_state": dict(resets=True, state=True),
    "mask": dict(mask=True, state=True),
    "dropout": dict(dropout=True),
    "all": dict(resets=True, mask=True, state=True, dropout=True),
}
# odd sizes exercise the GEMMs' partial k-pairs, micro-tile and panel edges
SHAPES = [(5, 7, 3, 5), (17, 12, 33, 40)]


def bf16_problem(seed, shape, **flags):
    """A make_problem dict whose float arrays are bf16-representable (float64 copies)."""
    p = make_problem(seed, *shape, np.float32, **flags)
    for name in DIFF_NAMES + ("dropout", "d_outputs", "d_h", "d_c"):
        if p.get(name) is not None:
            p[name] = np.asarray(tf.cast(tf.cast(p[name], tf.bfloat16), tf.float64))
    return p


def run_in(p, dtype, mode="eager", time_major=False):
    """The op on a batch-major problem in `dtype` (time-major layout if asked: the results
    come back batch-major)."""
    from reference import to_batch_major, to_time_major
    tm = to_time_major if time_major else (lambda a: a)
    cast = {n: None if p.get(n) is None else tf.cast(p[n], dtype)
            for n in DIFF_NAMES + ("dropout", "d_outputs", "d_h", "d_c")}
    flags = {n: None if p[n] is None else tm(p[n]) for n in ("resets", "mask")}
    outs, grads, raw = run_reset_lstm(
        mode, tm(cast["inputs"]), cast["kernel"], cast["recurrent_kernel"], cast["bias"],
        resets=flags["resets"], h0=cast["h0"], c0=cast["c0"], mask=flags["mask"],
        d_outputs=None if cast["d_outputs"] is None else tm(cast["d_outputs"]), d_h=cast["d_h"],
        d_c=cast["d_c"], dropout=cast["dropout"], time_major=time_major)
    if time_major:
        outs = (to_batch_major(outs[0]),) + tuple(outs[1:])
        grads["inputs"] = to_batch_major(grads["inputs"])
    return outs, grads


def errors_against_reference(p, outs, grads):
    (ry, rh, rc), rg = reference_for(p)
    errs = {}
    pairs = [("outputs", outs[0], ry), ("h", outs[1], rh), ("c", outs[2], rc)]
    pairs += [("d_" + n, grads[n], rg[n]) for n in DIFF_NAMES if p.get(n) is not None]
    for name, got, want in pairs:
        assert tf.as_dtype(got.dtype) == tf.bfloat16, f"{name} came back as {got.dtype}"
        got = np.asarray(tf.cast(got, tf.float64))
        errs[name] = float(np.abs(got - want).max() / max(1e-12, np.abs(want).max()))
    return errs


needs_bf16 = pytest.mark.skipif(not CPU_HAS_BF16, reason="this CPU has no AVX512-BF16")


@pytest.mark.parametrize("projection", ["default", "hoisted"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_bf16_against_float64_reference(scenario, shape, projection, monkeypatch):
    if projection != "default":  # the default here is the per-step input projection
        monkeypatch.setenv("RESETLSTM_CPU_INPUT", projection)
    p = bf16_problem(3, shape, **SCENARIOS[scenario])
    outs, grads = run_in(p, tf.bfloat16, mode="function", time_major=scenario == "all")
    errs = errors_against_reference(p, outs, grads)
    print(scenario, shape, {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) < BF16_BOUND, errs
    if ops._native_bf16():
        # the bf16 kernels round inside the sequence: not the float32 kernel rounded once
        (y32, _, _), _ = run_in(p, tf.float32)
        rounded = np.asarray(tf.cast(tf.cast(y32, tf.bfloat16), tf.float32))
        assert np.any(np.asarray(tf.cast(outs[0], tf.float32)) != rounded)


def test_build_info_reports_the_bf16_path():
    info = resetlstm.build_info()["bf16"]
    assert info["cpu_gemm"] == ("avx512_bf16" if CPU_HAS_BF16 else "emulated")
    assert info["native"] == (CPU_HAS_BF16 and not tf.config.list_physical_devices("GPU"))


def test_build_info_leaves_device_configuration_open():
    """build_info() (which decides how bfloat16 runs) must not initialize TF's runtime: a script
    may still configure threads or devices afterwards (listing logical devices would have made
    this raise "cannot be modified after initialization")."""
    code = ("import tensorflow as tf, resetlstm; resetlstm.build_info(); "
            "tf.config.threading.set_intra_op_parallelism_threads(1); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@needs_bf16
def test_bf16_saves_bf16_activations():
    """The saved gates and cells are bf16: half the memory of the float32 op (5H values per
    (b, t) either way)."""
    p = bf16_problem(0, (4, 6, 3, 5))
    x, k, r, b = (tf.cast(p[n], tf.bfloat16) for n in ("inputs", "kernel", "recurrent_kernel",
                                                       "bias"))
    empty_b, empty_f = tf.zeros([0], tf.bool), tf.zeros([0], tf.bfloat16)
    outs = ops._ops.reset_lstm(x, k, r, b, empty_b, empty_b, empty_f, empty_f, empty_f)
    assert [o.dtype for o in outs] == [tf.bfloat16] * 5
    assert outs[3].shape == (4, 6, 20) and outs[4].shape == (4, 6, 5)


def test_bf16_layer_trains_with_float32_weights():
    """ResetLSTM under mixed_bfloat16 (the bf16 kernels here when native): a fit step moves the
    float32 weights, and the layer's outputs stay within the bf16 bound of the float32 layer."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12, 6)).astype(np.float32)
    resets = rng.random((8, 12)) < 0.1
    base = resetlstm.ResetLSTM(16, return_sequences=True)
    base.build(x.shape)
    layer = resetlstm.ResetLSTM(16, return_sequences=True, dtype="mixed_bfloat16")
    layer.build(x.shape)
    layer.set_weights(base.get_weights())
    y = layer(x, resets=resets)
    assert y.dtype == "bfloat16"
    want = np.asarray(base(x, resets=resets))
    err = np.abs(np.asarray(tf.cast(y, tf.float32)) - want).max() / np.abs(want).max()
    assert err < BF16_BOUND, err
    before = [w.copy() for w in layer.get_weights()]
    opt = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.cast(layer(x, resets=resets), tf.float32) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g.dtype == tf.float32 for g in grads)
    opt.apply_gradients(zip(grads, layer.trainable_weights))
    assert all(np.abs(a - b).max() > 0 for a, b in zip(layer.get_weights(), before))


# ---------------------------------------------------------------- the emulated bf16 GEMM

_CHILD = r"""
import json, sys
sys.path.insert(0, {here!r})
import numpy as np, tensorflow as tf
import resetlstm
from resetlstm.tf import ops
out = {{"info": resetlstm.build_info(), "errors": {{}}, "outputs": {{}}}}
ops._NATIVE_BF16 = True  # run the bf16 kernels even though their GEMM is emulated here
import test_bf16 as t
for scenario in ("plain", "all"):
    for shape in t.SHAPES:
        p = t.bf16_problem(3, shape, **t.SCENARIOS[scenario])
        outs, grads = t.run_in(p, tf.bfloat16, time_major=scenario == "all")
        key = scenario + "-" + "x".join(map(str, shape))
        out["errors"][key] = t.errors_against_reference(p, outs, grads)
        out["outputs"][key] = np.asarray(tf.cast(outs[0], tf.float32)).ravel().tolist()
print("RESULT" + json.dumps(out))
"""


def run_child(isa):
    env = dict(os.environ, RESETLSTM_ISA=isa)
    code = _CHILD.format(here=HERE)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("isa", ["avx512", "generic"])
def test_emulated_bf16_gemm_meets_the_same_bound(isa):
    """With the instruction set capped below AVX512-BF16 the bf16 kernels run emulated GEMMs
    (and reset_lstm would widen bf16 to float32 instead: `native` False). Forced to run them,
    they meet the bound, and their outputs agree with this process's (vdpbf16ps) outputs to
    within a couple of bf16 roundings (the summation order differs)."""
    child = run_child(isa)
    assert child["info"]["bf16"] == {"cpu_gemm": "emulated", "native": False}
    assert child["info"]["simd"]["selected"] == isa
    for key, errs in child["errors"].items():
        assert max(errs.values()) < BF16_BOUND, (key, errs)
    for scenario in ("plain", "all"):
        for shape in SHAPES:
            key = scenario + "-" + "x".join(map(str, shape))
            p = bf16_problem(3, shape, **SCENARIOS[scenario])
            outs, _ = run_in(p, tf.bfloat16, time_major=scenario == "all")
            mine = np.asarray(tf.cast(outs[0], tf.float32)).ravel()
            theirs = np.asarray(child["outputs"][key])
            assert np.abs(mine - theirs).max() <= 2 * BF16_BOUND * max(1.0, np.abs(mine).max())
