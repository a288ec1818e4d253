"""TensorFlow bindings: loads the op library (the LSTM's and the GRU's ops), wraps the LSTM's and
registers its gradient (the GRU's: resetlstm.tf.gru)."""
from __future__ import annotations

import os

import tensorflow as tf

from resetlstm import _build_info
from resetlstm._version import __version__

# The op library sits at the package root (CMake installs every native library there).
_LIBRARY_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "_resetlstm_ops.so")
_ops = tf.load_op_library(_LIBRARY_PATH)

# The kernels take float32 and float64, and half types: inputs, weights, outputs and saved
# activations in 16 bits, every matmul accumulating in float32 and the cell state float32 for the
# whole sequence. Which half types run natively depends on where the op runs:
# - on a GPU (a CUDA build with a visible GPU, the op not pinned to the CPU): float16 always,
#   bfloat16 on compute capability 8.0+ (tensor-core GEMMs);
# - on the CPU: bfloat16 with AVX512-BF16 (its vdpbf16ps unit); no float16 kernels.
# Otherwise (float16 on the CPU; bfloat16 on CPUs without AVX512-BF16, whose emulated bf16 GEMMs
# are slower than float32 ones, or on pre-Ampere GPUs) half arguments are widened to float32 at
# the op's boundary and the results rounded back; gradients come back in each argument's dtype
# through the casts.
_KERNEL_DTYPES = (tf.float32, tf.float64)
_HALF_DTYPES = (tf.float16, tf.bfloat16)
_FLOAT_DTYPES = _KERNEL_DTYPES + _HALF_DTYPES


_NATIVE_BF16 = None
_GPU_HALF = None


def _native_bf16() -> bool:
    """Whether bfloat16 runs in the CPU's bf16 kernels (AVX512-BF16; see above)."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        from resetlstm import _native

        _NATIVE_BF16 = _native.bf16_gemm() == "avx512_bf16"
    return _NATIVE_BF16


def _gpu_half_dtypes() -> frozenset:
    """The half dtypes the op's GPU kernels run natively on the visible GPUs: empty without a
    GPU or without CUDA in this build; float16 on every GPU; bfloat16 when all of them have
    compute capability 8.0 or newer."""
    global _GPU_HALF
    if _GPU_HALF is None:
        # physical, not logical, devices: listing them does not initialize TF's runtime, so a
        # script can still configure threads and devices after build_info()
        gpus = tf.config.list_physical_devices("GPU") if _build_info.CUDA else []
        names = set()
        if gpus:
            names.add("float16")
            caps = [tf.config.experimental.get_device_details(g).get("compute_capability")
                    for g in gpus]
            if all(cap is not None and tuple(cap) >= (8, 0) for cap in caps):
                names.add("bfloat16")
        _GPU_HALF = frozenset(names)
    return _GPU_HALF


def _runs_natively(dtype, probe) -> bool:
    """Whether `dtype` arguments run in the op's own kernels for that dtype rather than widened
    to float32. `probe` is a tensor made in the caller's device scope: the op goes where it
    goes (a GPU, unless the scope pins the CPU)."""
    if dtype in _KERNEL_DTYPES:
        return True
    gpu_half = _gpu_half_dtypes()
    if gpu_half and "CPU" not in probe.device.upper():  # the op runs on a GPU
        return dtype.name in gpu_half
    return dtype == tf.bfloat16 and _native_bf16()


def build_info() -> dict:
    """How this installation was built and what it runs with.

    Returns a dict with the package ``version``, the ``tensorflow`` version it was built
    against, the ``compiler``, whether ``cuda`` was built in, the CUDA architectures, and
    ``simd``: the instruction sets compiled in and the one selected on this CPU, and ``bf16``:
    how bfloat16 runs: ``cpu_gemm`` is ``"avx512_bf16"`` (the CPU's vdpbf16ps instruction) or
    ``"emulated"`` (CPUs without AVX512-BF16: bf16 widened to float32 FMAs, same results up to
    summation order but slower than the float32 kernels); ``native``: whether ``reset_lstm``
    (outside any device scope) runs bfloat16 arguments in bf16 kernels: on a visible GPU when
    its compute capability is 8.0 or newer, else on the CPU with ``"avx512_bf16"``; when False
    they are widened to float32 and run in the float32 kernels. ``gpu_half``: for ``float16``
    and ``bfloat16``, whether the visible GPUs run them in the half kernels (tensor-core GEMMs,
    float32 accumulation and cell state); both False without a GPU or without CUDA.
    """
    from resetlstm import _native

    gpu_half = _gpu_half_dtypes()
    return {
        "version": __version__,
        "tensorflow": _build_info.TENSORFLOW,
        "compiler": _build_info.COMPILER,
        "cuda": bool(_build_info.CUDA),
        "cuda_architectures": _build_info.CUDA_ARCHITECTURES,
        "simd": {"compiled": list(_build_info.SIMD_COMPILED), "selected": _native.selected_isa()},
        "bf16": {"cpu_gemm": _native.bf16_gemm(),
                 "native": "bfloat16" in gpu_half if gpu_half else _native_bf16()},
        "gpu_half": {name: name in gpu_half for name in ("float16", "bfloat16")},
    }


def _could_record_gradient() -> bool:
    """Whether a gradient of the op may be requested: inside a graph (tf.function) always
    (the kernel then skips saving when nothing consumes the saved tensors); eagerly only
    while a GradientTape is recording."""
    if not tf.executing_eagerly():
        return True
    try:
        from tensorflow.python.eager import record

        return record.could_possibly_record()
    except (ImportError, AttributeError):  # pragma: no cover
        return True


def _float_tensor(value, name: str, dtype=None, caller: str = "reset_lstm"):
    if isinstance(value, (tf.Tensor, tf.Variable)) or hasattr(value, "dtype"):
        t = tf.convert_to_tensor(value)
    else:  # python lists/scalars take the dtype of `inputs`
        t = tf.convert_to_tensor(value, dtype_hint=dtype or tf.float32)
    if dtype is None:
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{caller}: `{name}` must be float32, float64, float16 or "
                             f"bfloat16, got {t.dtype.name}")
    elif t.dtype != dtype:
        raise ValueError(
            f"{caller}: `{name}` has dtype {t.dtype.name} but `inputs` has {dtype.name}; "
            "all float arguments must share one dtype"
        )
    return t


def _flag_tensor(value, name: str, caller: str = "reset_lstm"):
    """bool, or 0/1 ints/floats (any nonzero value counts as True)."""
    t = tf.convert_to_tensor(value)
    if t.dtype == tf.bool:
        return t
    if not (t.dtype.is_integer or t.dtype.is_floating):
        raise ValueError(f"{caller}: `{name}` must be bool or 0/1 numbers, got {t.dtype.name}")
    return tf.not_equal(t, tf.zeros([], t.dtype))


def reset_lstm(
    inputs,
    kernel,
    recurrent_kernel,
    bias,
    resets=None,
    initial_state=None,
    mask=None,
    time_major: bool = False,
    recurrent_dropout_mask=None,
):
    """Runs an LSTM over a sequence whose state can be reset per batch row at any step.

    Args:
      inputs: [B, T, I] float32, float64, float16 or bfloat16 ([T, B, I] if ``time_major``).
        All float arguments share its dtype. Half types compute in float32 inside (every matmul
        accumulates in float32 and the cell state stays float32 between steps); results come
        back in the half type. On a GPU float16 and bfloat16 (compute capability 8.0+) run in
        half kernels (tensor-core GEMMs); on the CPU bfloat16 does with AVX512-BF16 (vdpbf16ps);
        other half cases run the float32 kernels on widened copies (``build_info()``).
      kernel: [I, 4H], recurrent_kernel: [H, 4H], bias: [4H]. Keras layout, gates i, f, c, o,
        so the weights of ``keras.layers.LSTM`` load 1:1.
      resets: optional [B, T] ([T, B]) bool or 0/1: True at (b, t) zeroes row b's h and c
        before step t. No gradient crosses a reset.
      initial_state: optional pair (h0, c0), each [B, H]; zeros when absent.
      mask: optional [B, T] ([T, B]) bool, Keras masking: a masked step carries the state and
        repeats the previous output (zeros before the first unmasked step).
      time_major: whether the first two axes of inputs/outputs/resets/mask are (T, B).
      recurrent_dropout_mask: optional [B, H], the dtype of ``inputs``: every step reads
        ``recurrent_dropout_mask * h`` in the recurrent matmul,
        ``z = x_t @ kernel + (m * h) @ recurrent_kernel + bias`` (h, the outputs and the carried
        state are not scaled). For recurrent dropout pass 0 or 1/(1-rate) per entry, one draw per
        sequence. It gets no gradient.

    Returns:
      (outputs [B, T, H], h_T [B, H], c_T [B, H]), in the dtype of ``inputs``.
    """
    with tf.name_scope("reset_lstm"):
        inputs = _float_tensor(inputs, "inputs")
        dtype = inputs.dtype
        kernel = _float_tensor(kernel, "kernel", dtype)
        recurrent_kernel = _float_tensor(recurrent_kernel, "recurrent_kernel", dtype)
        bias = _float_tensor(bias, "bias", dtype)
        placeholder_flags = tf.zeros([0], tf.bool)
        placeholder_state = tf.zeros([0], dtype)
        use_resets, use_mask = resets is not None, mask is not None
        resets = _flag_tensor(resets, "resets") if use_resets else placeholder_flags
        mask = _flag_tensor(mask, "mask") if use_mask else placeholder_flags
        use_initial_state = initial_state is not None
        if use_initial_state:
            if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
                raise ValueError(
                    "reset_lstm: `initial_state` must be a pair (h0, c0) of [B, H] tensors, got "
                    f"{type(initial_state).__name__}"
                    + (f" of length {len(initial_state)}" if hasattr(initial_state, "__len__") else "")
                )
            h0 = _float_tensor(initial_state[0], "initial_state[0] (h)", dtype)
            c0 = _float_tensor(initial_state[1], "initial_state[1] (c)", dtype)
        else:
            h0 = c0 = placeholder_state
        use_recurrent_dropout = recurrent_dropout_mask is not None
        if use_recurrent_dropout:
            drop = _float_tensor(recurrent_dropout_mask, "recurrent_dropout_mask", dtype)
        else:
            drop = placeholder_state
        floats = [inputs, kernel, recurrent_kernel, bias, h0, c0, drop]
        widen = not _runs_natively(dtype, placeholder_state)
        if widen:  # float32 kernels; see _HALF_DTYPES
            floats = [tf.cast(t, tf.float32) for t in floats]
        inputs_k, kernel_k, recurrent_kernel_k, bias_k, h0_k, c0_k, drop_k = floats
        outputs, h, c, _, _ = _ops.reset_lstm(
            inputs_k,
            kernel_k,
            recurrent_kernel_k,
            bias_k,
            resets,
            mask,
            h0_k,
            c0_k,
            drop_k,
            time_major=bool(time_major),
            use_resets=use_resets,
            use_mask=use_mask,
            use_initial_state=use_initial_state,
            use_recurrent_dropout=use_recurrent_dropout,
            training=_could_record_gradient(),
        )
        if widen:
            outputs, h, c = (tf.cast(t, dtype) for t in (outputs, h, c))
        return outputs, h, c


def reset_lstm_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None):
    """One LSTM step with an optional per-row reset: the same op as ``reset_lstm`` with T = 1.

    Args:
      x_t: [B, I]; h, c: [B, H]; kernel [I, 4H]; recurrent_kernel [H, 4H]; bias [4H];
      reset: optional [B] bool or 0/1: True zeroes that row's h and c before the step.

    Returns:
      (h, c) after the step, each [B, H].
    """
    with tf.name_scope("reset_lstm_cell"):
        x_t = _float_tensor(x_t, "x_t")
        h = _float_tensor(h, "h", x_t.dtype)
        c = _float_tensor(c, "c", x_t.dtype)
        for name, t, rank in (("x_t", x_t, 2), ("h", h, 2), ("c", c, 2)):
            if t.shape.rank is not None and t.shape.rank != rank:
                raise ValueError(
                    f"reset_lstm_cell: `{name}` must be rank {rank} [B, {'I' if name == 'x_t' else 'H'}], "
                    f"got shape {t.shape}"
                )
        resets = None
        if reset is not None:
            reset = _flag_tensor(reset, "reset")
            if reset.shape.rank is not None and reset.shape.rank != 1:
                raise ValueError(f"reset_lstm_cell: `reset` must be rank 1 [B], got shape {reset.shape}")
            resets = reset[:, None]
        _, h_next, c_next = reset_lstm(
            x_t[:, None, :], kernel, recurrent_kernel, bias, resets=resets, initial_state=(h, c)
        )
        return h_next, c_next


@tf.RegisterGradient("ResetLSTM")
def _reset_lstm_grad(op, d_outputs, d_h, d_c, _d_gates, _d_cells):
    """BPTT through ResetLSTM. resets, mask and the recurrent dropout mask get no gradient;
    neither do the placeholders of absent optional arguments."""
    inputs, kernel, recurrent_kernel, _bias, resets, mask, h0, c0, drop = op.inputs
    outputs, h, c, gates, cells = op.outputs
    if not op.get_attr("training"):
        raise ValueError(
            "reset_lstm: the forward pass ran without saving activations (no GradientTape was "
            "recording); call it under the tape you take the gradient from"
        )
    d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
    d_h = tf.zeros_like(h) if d_h is None else d_h
    d_c = tf.zeros_like(c) if d_c is None else d_c
    use_initial_state = op.get_attr("use_initial_state")
    dx, dk, drk, db, dh0, dc0 = _ops.reset_lstm_grad(
        inputs,
        kernel,
        recurrent_kernel,
        resets,
        mask,
        h0,
        c0,
        drop,
        outputs,
        gates,
        cells,
        d_outputs,
        d_h,
        d_c,
        time_major=op.get_attr("time_major"),
        use_resets=op.get_attr("use_resets"),
        use_mask=op.get_attr("use_mask"),
        use_initial_state=use_initial_state,
        use_recurrent_dropout=op.get_attr("use_recurrent_dropout"),
    )
    if not use_initial_state:
        dh0 = dc0 = None
    return [dx, dk, drk, db, None, None, dh0, dc0, None]
