"""What the Keras layer takes from the backend Keras runs on (``keras.backend.backend()``):
the fused op on that backend's tensors, and where a stateful layer keeps its state.

- tensorflow: ``resetlstm.reset_lstm`` (the TF op); the state variables sit in a ``tf.Module``
  so that SavedModel export captures them.
- torch: ``resetlstm.torch.reset_lstm`` (torch custom ops with autograd).
- jax: ``resetlstm.jax.reset_lstm`` (XLA FFI custom calls with a custom VJP).
Any other backend is refused with an error naming the ones that work.
"""
import keras

SUPPORTED = ("tensorflow", "torch", "jax")


def backend() -> str:
    return keras.backend.backend()


def check_supported(cls_name: str) -> None:
    name = backend()
    if name not in SUPPORTED:
        raise ValueError(
            f"{cls_name} runs on the Keras backends {', '.join(SUPPORTED)}; this process runs "
            f"Keras on {name!r} (KERAS_BACKEND). Use keras.layers.LSTM there, or another backend.")


def reset_lstm_op():
    """The fused op of the current backend: reset_lstm(inputs, kernel, recurrent_kernel, bias,
    resets=, initial_state=, mask=, recurrent_dropout_mask=) -> (outputs, h, c)."""
    name = backend()
    if name == "tensorflow":
        from resetlstm.tf.ops import reset_lstm
    elif name == "torch":
        from resetlstm.torch.ops import reset_lstm
    elif name == "jax":
        from resetlstm.jax import reset_lstm
    else:
        check_supported("resetlstm.ResetLSTM")
    return reset_lstm


class StreamState:
    """A stateful layer's (h, c) variables, out of Keras' tracking (the state is not a weight:
    not in ``get_weights()`` or ``.keras`` files, and its shape depends on the batch size), as
    keras.layers.LSTM keeps its state."""

    def __init__(self, h, c):
        self.h, self.c = h, c


_TF_STREAM_STATE = None


def stream_state(h, c):
    """A StreamState; on TensorFlow a ``tf.Module`` too, tracked by TensorFlow so that
    ``tf.saved_model.save`` and ``model.export`` capture the state."""
    global _TF_STREAM_STATE
    if backend() != "tensorflow":
        return StreamState(h, c)
    if _TF_STREAM_STATE is None:
        import tensorflow as tf

        class TFStreamState(StreamState, tf.Module):
            def __init__(self, h, c):
                tf.Module.__init__(self, name="stream_state")
                StreamState.__init__(self, h, c)

        _TF_STREAM_STATE = TFStreamState
    return _TF_STREAM_STATE(h, c)
