"""The Keras 3 layers: ``ResetLSTM`` (a drop-in for ``keras.layers.LSTM`` plus per-row
``resets``) and ``Bidirectional``, on whichever backend Keras runs (TensorFlow, JAX or PyTorch:
``keras.backend.backend()``). Importing this module registers both with Keras, so
``keras.models.load_model`` finds them; it loads the framework of Keras' backend and no other.

    import resetlstm.keras            # or: resetlstm.ResetLSTM, loaded on first use
    layer = resetlstm.keras.ResetLSTM(units, return_sequences=True)
    y = layer(x, resets=resets)
"""
from resetlstm.keras.layers import Bidirectional, ResetLSTM, backward_resets

__all__ = ["ResetLSTM", "Bidirectional", "backward_resets"]
