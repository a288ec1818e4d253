"""Arrays that describe themselves as CUDA device memory through DLPack without any GPU:
`__dlpack_device__` says (kDLCUDA, device) and `__dlpack__` returns a "dltensor" capsule with the
shape, strides and dtype asked for and a data pointer nothing may read. They let a machine without
a GPU run every argument check of resetlstm._native.forward_cuda / backward_cuda, which validate
from the DLPack metadata before touching a device."""
import ctypes

import numpy as np

kDLCPU, kDLCUDA = 1, 2
DTYPES = {"float32": (2, 32), "float64": (2, 64), "float16": (2, 16), "bfloat16": (4, 16),
          "bool": (6, 8), "int32": (0, 32)}
_CAPSULE_NAME = b"dltensor"  # lives as long as the module, as the capsules require


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class FakeCudaArray:
    """shape, dtype name, strides in elements (None: compact), device (type, id)."""

    def __init__(self, shape, dtype="float32", strides=None, device=(kDLCUDA, 0)):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.device = device
        ndim = len(self.shape)
        self._shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        self._strides = None if strides is None else (ctypes.c_int64 * max(ndim, 1))(*strides)
        code, bits = DTYPES[dtype]
        self._managed = _Managed()
        t = self._managed.dl_tensor
        t.data = 0x10000  # never dereferenced: every call with fakes fails before any launch
        t.device = _Device(*device)
        t.ndim = ndim
        t.dtype = _DataType(code, bits, 1)
        t.shape = ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64))
        if self._strides is not None:
            t.strides = ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64))
        self.streams = []  # the stream argument of every __dlpack__ call

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        return _new_capsule(ctypes.addressof(self._managed), _CAPSULE_NAME, None)


def fake(shape, dtype="float32", **kw):
    return FakeCudaArray(shape, dtype, **kw)


def lstm_args(B=2, T=3, I=4, H=2, dtype="float32"):
    """inputs, kernel, recurrent_kernel, bias of a consistent call."""
    return fake((B, T, I), dtype), fake((I, 4 * H), dtype), fake((H, 4 * H), dtype), \
        fake((4 * H,), dtype)


__all__ = ["FakeCudaArray", "fake", "lstm_args", "kDLCPU", "kDLCUDA", "np"]
