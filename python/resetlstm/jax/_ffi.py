"""The native side of resetlstm.jax: loads ``resetlstm._jax_ffi`` (the XLA FFI handlers over the
framework-free kernels), registers its handlers with XLA, and says which kernel dtype runs a
given argument dtype on each platform."""
from __future__ import annotations

import functools
import importlib

import jax
import numpy as np

try:
    _jax_ffi = importlib.import_module("resetlstm._jax_ffi")
except ModuleNotFoundError as _error:
    if _error.name != "resetlstm._jax_ffi":
        raise
    raise ImportError(
        "resetlstm.jax needs the JAX binding resetlstm._jax_ffi, which this installation of "
        "resetlstm lacks: it is built when jaxlib is installed at build time. Install it with "
        "`pip install \"resetlstm[jax]\"` (an isolated build always has jaxlib), or in a source "
        "tree `pip install jaxlib` then rebuild (`RESETLSTM_JAX=ON pip install .`, or "
        "tools/dev-build)."
    ) from _error

FORWARD = "resetlstm_forward"
BACKWARD = "resetlstm_backward"

for _direction, _capsule in _jax_ffi.cpu_targets().items():
    jax.ffi.register_ffi_target(f"resetlstm_{_direction}", _capsule, platform="cpu")
# Compiled in when nvcc was found at build time; only ever run on a machine with a GPU (the
# development machine has none, so this path has never executed there).
for _direction, _capsule in _jax_ffi.cuda_targets().items():
    jax.ffi.register_ffi_target(f"resetlstm_{_direction}", _capsule, platform="CUDA")

PLATFORMS = ("cpu", "cuda") if _jax_ffi.cuda_built else ("cpu",)


@functools.lru_cache(maxsize=None)
def _cuda_bf16() -> bool:
    """Whether every visible GPU runs the bfloat16 kernels (compute capability 8.0+). Lowering
    for CUDA where no GPU is visible (jax.export): assumed so (the handler reports an error on
    an older GPU)."""
    try:
        devices = jax.devices("cuda")
    except RuntimeError:
        return True
    for device in devices:
        major, minor = (int(v) for v in str(device.compute_capability).split(".")[:2])
        if _jax_ffi.cuda_dtype_unsupported_reason("bfloat16", major, minor):
            return False
    return True


def kernel_dtype(platform: str, dtype) -> np.dtype:
    """The dtype of the kernels that run `dtype` arguments on `platform`: the same, or float32
    (the arguments are then widened at the call and the results rounded back):

    - CPU: float32 and float64; bfloat16 when the CPU has AVX512-BF16 (``bf16_gemm() ==
      "avx512_bf16"``: its emulated bf16 GEMMs are slower than float32 ones); float16 never.
    - CUDA: float32, float64, float16; bfloat16 on compute capability 8.0+.
    """
    dtype = np.dtype(dtype)
    if dtype.name in ("float32", "float64"):
        return dtype
    if platform == "cpu":
        native = dtype.name == "bfloat16" and _jax_ffi.bf16_gemm() == "avx512_bf16"
    else:
        native = dtype.name == "float16" or (dtype.name == "bfloat16" and _cuda_bf16())
    return dtype if native else np.dtype(np.float32)


def workspace_bytes(platform: str, direction: str, dtype, dims, time_major: bool,
                    flag: bool, cell: int) -> int:
    """Bytes of a call's workspace result (flag: training for the forward, has_mask for the
    backward; cell: the FFI's cell attribute)."""
    B, T, I, H = dims
    return _jax_ffi.workspace_bytes(platform, direction, np.dtype(dtype).name, B, T, I, H,
                                    time_major, flag, cell)


check_shapes = _jax_ffi.check_shapes
bf16_gemm = _jax_ffi.bf16_gemm
