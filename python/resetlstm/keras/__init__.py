"""The Keras 3 layers: ``ResetLSTM`` and ``ResetGRU`` (drop-ins for ``keras.layers.LSTM`` and
``keras.layers.GRU`` plus per-row ``resets``) and ``Bidirectional``, on whichever backend Keras
runs (TensorFlow, JAX or PyTorch: ``keras.backend.backend()``). Importing this module registers
them with Keras, so ``keras.models.load_model`` finds them; it loads the framework of Keras'
backend and no other.

    import resetlstm.keras            # or: resetlstm.ResetLSTM / resetlstm.ResetGRU
    layer = resetlstm.keras.ResetGRU(units, return_sequences=True)
    y = layer(x, resets=resets)
"""
from resetlstm.keras.layers import Bidirectional, ResetGRU, ResetLSTM, backward_resets

__all__ = ["ResetLSTM", "ResetGRU", "Bidirectional", "backward_resets"]
