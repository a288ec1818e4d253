// This CPU's cache sizes per core, read at run time (sysconf), from which the kernels derive
// their blocking and work splits instead of constants tuned for one part.
#pragma once

#include <cstdint>
#include <cstdlib>

#include <unistd.h>

namespace resetlstm {
namespace cpu {

// sysconf's value for `name`, or `fallback` when the system does not say.
inline int64_t cache_bytes(int name, int64_t fallback) {
  const long v = sysconf(name);
  return v > 0 ? static_cast<int64_t>(v) : fallback;
}

// L1 data cache per core (32 KiB when unknown).
inline int64_t l1d_bytes() {
  static const int64_t bytes = cache_bytes(_SC_LEVEL1_DCACHE_SIZE, int64_t{32} << 10);
  return bytes;
}

// L2 cache per core (1 MiB when unknown).
inline int64_t l2_bytes() {
  static const int64_t bytes = cache_bytes(_SC_LEVEL2_CACHE_SIZE, int64_t{1} << 20);
  return bytes;
}

}  // namespace cpu
}  // namespace resetlstm
