"""The layers a Keras model holds, nested models and wrappers (``Bidirectional``,
``TimeDistributed``) included: what the streaming server and the portable exports look for."""
from __future__ import annotations

import keras

from resetlstm.keras import ResetGRU, ResetLSTM

__all__ = ["all_layers", "reset_layers"]


def all_layers(model):
    """Every layer inside `model`, nested models and wrappers included, each once."""
    seen, stack, found = set(), list(model.layers), []
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
        for attr in ("layer", "forward_layer", "backward_layer"):
            inner = getattr(layer, attr, None)
            if isinstance(inner, keras.layers.Layer):
                stack.append(inner)
    return found


def reset_layers(model):
    """Every ``ResetLSTM`` and ``ResetGRU`` inside ``model`` (nested models and wrappers
    included), in the model's layer order."""
    return [layer for layer in all_layers(model) if isinstance(layer, (ResetLSTM, ResetGRU))]
