"""What the Keras layer takes from the backend Keras runs on (``keras.backend.backend()``):
the fused op on that backend's tensors, and where a stateful layer keeps its state.

- tensorflow: ``resetlstm.reset_lstm`` / ``reset_gru`` (the TF ops); the state variables sit in
  a ``tf.Module`` so that SavedModel export captures them.
- torch: ``resetlstm.torch.reset_lstm`` / ``reset_gru`` (torch custom ops with autograd).
- jax: ``resetlstm.jax.reset_lstm`` / ``reset_gru`` (XLA FFI custom calls with a custom VJP).
Any other backend is refused with an error naming the ones that work.
"""
import keras

SUPPORTED = ("tensorflow", "torch", "jax")


def backend() -> str:
    return keras.backend.backend()


def check_supported(cls_name: str, original: str = "keras.layers.LSTM") -> None:
    name = backend()
    if name not in SUPPORTED:
        raise ValueError(
            f"{cls_name} runs on the Keras backends {', '.join(SUPPORTED)}; this process runs "
            f"Keras on {name!r} (KERAS_BACKEND). Use {original} there, or another backend.")


def _module_for(op_name):
    name = backend()
    if name == "tensorflow":
        return "resetlstm.tf.gru" if op_name == "reset_gru" else "resetlstm.tf.ops"
    if name == "torch":
        return "resetlstm.torch.gru_ops" if op_name == "reset_gru" else "resetlstm.torch.ops"
    return "resetlstm.jax"


def fused_op(op_name):
    """The fused op ``op_name`` ("reset_lstm" or "reset_gru") of the current backend, on its
    tensors: reset_lstm(inputs, kernel, recurrent_kernel, bias, resets=, initial_state=, mask=,
    recurrent_dropout_mask=) -> (outputs, h, c); reset_gru(..., reset_after=) -> (outputs, h)."""
    check_supported(f"resetlstm.{op_name}")
    import importlib

    return getattr(importlib.import_module(_module_for(op_name)), op_name)


class StreamState:
    """A stateful layer's state variables, h (and c for the LSTM), out of Keras' tracking (the
    state is not a weight: not in ``get_weights()`` or ``.keras`` files, and its shape depends
    on the batch size), as keras.layers.LSTM and GRU keep their state."""

    def __init__(self, h, c=None):
        self.h, self.c = h, c

    @property
    def state_variables(self):
        """(h,) or (h, c), in the order the cell's op returns them."""
        return (self.h,) if self.c is None else (self.h, self.c)


_TF_STREAM_STATE = None


def stream_state(h, c=None):
    """A StreamState; on TensorFlow a ``tf.Module`` too, tracked by TensorFlow so that
    ``tf.saved_model.save`` and ``model.export`` capture the state."""
    global _TF_STREAM_STATE
    if backend() != "tensorflow":
        return StreamState(h, c)
    if _TF_STREAM_STATE is None:
        import tensorflow as tf

        class TFStreamState(StreamState, tf.Module):
            def __init__(self, h, c=None):
                tf.Module.__init__(self, name="stream_state")
                StreamState.__init__(self, h, c)

        _TF_STREAM_STATE = TFStreamState
    return _TF_STREAM_STATE(h, c)
