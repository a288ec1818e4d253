// Runtime flags that sit in a hot loop (has resets, has mask, training, ...) become template
// bools, dispatched once per call (the idea of mamba's static_switch.h). Used by the CPU and the
// CUDA kernels alike.
#pragma once

#define RLSTM_BOOL_SWITCH(cond, NAME, ...) \
  [&] {                                    \
    if (cond) {                            \
      constexpr bool NAME = true;          \
      return __VA_ARGS__();                \
    } else {                               \
      constexpr bool NAME = false;         \
      return __VA_ARGS__();                \
    }                                      \
  }()
