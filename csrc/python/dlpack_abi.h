// The few DLPack declarations the CUDA bindings read: the unversioned DLManagedTensor ABI that
// `obj.__dlpack__()` exports in a PyCapsule named "dltensor" (DLPack 0.x/1.x, see
// https://dmlc.github.io/dlpack/latest/c_api.html). Written from the specification; only the
// fields and enum values used here.
#pragma once

#include <cstdint>

namespace resetlstm {
namespace dlpack {

enum DeviceType : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLCUDAManaged = 13,
};

enum DataTypeCode : uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
  kDLBool = 6,
};

struct DLDevice {
  int32_t device_type;  // DeviceType
  int32_t device_id;
};

struct DLDataType {
  uint8_t code;  // DataTypeCode
  uint8_t bits;
  uint16_t lanes;
};

struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; null means compact row-major
  uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

}  // namespace dlpack
}  // namespace resetlstm
