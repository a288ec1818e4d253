"""resetlstm on JAX: the fused reset-LSTM and reset-GRU as XLA FFI custom calls (no TensorFlow
needed).

    import resetlstm.jax as rj
    outputs, h, c = rj.reset_lstm(inputs, kernel, recurrent_kernel, bias, resets=None,
                                  mask=None, initial_state=None,
                                  recurrent_dropout_mask=None, time_major=False)
    outputs, h = rj.reset_gru(inputs, kernel, recurrent_kernel, bias, resets=None,
                              reset_after=True)          # kernels [I, 3H], [H, 3H]

Flax: ``resetlstm.jax.linen.ResetLSTM``, ``ResetGRU`` and ``ScannedRNN`` (PureJaxRL's module,
computed by the fused GRU; see docs/jax.md).
"""
from resetlstm.jax._gru_op import reset_gru
from resetlstm.jax._op import reset_lstm

__all__ = ["reset_lstm", "reset_gru"]
