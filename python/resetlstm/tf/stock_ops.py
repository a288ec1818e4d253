"""Whether a traced TensorFlow function holds resetlstm's custom ops: a portable export must
not (it has to load where resetlstm is not installed)."""
from __future__ import annotations

__all__ = ["CUSTOM_OPS", "check_stock"]

CUSTOM_OPS = ("ResetLSTM", "ResetLSTMGrad", "ResetGRU", "ResetGRUGrad")


def _op_types(graph_def):
    """(op type, node name) of every node, function bodies (while loops) included."""
    for node in graph_def.node:
        yield node.op, node.name
    for function in graph_def.library.function:
        for node in function.node_def:
            yield node.op, f"{function.signature.name}/{node.name}"


def check_stock(concrete, caller):
    """Refuse a traced function that still holds resetlstm's custom ops (a layer that calls
    ``resetlstm.reset_lstm`` or ``reset_gru`` itself rather than through the Keras layers)."""
    left = [name for op, name in _op_types(concrete.graph.as_graph_def()) if op in CUSTOM_OPS]
    if left:
        raise ValueError(
            f"{caller}: the traced model still holds resetlstm's custom op at {left[:3]}: only "
            "ResetLSTM and ResetGRU layers are lowered to stock ops. A layer that calls "
            "resetlstm.reset_lstm (reset_gru) itself must call "
            "resetlstm.tf.portable.portable_reset_lstm (portable_reset_gru; the same arguments "
            "and results) to be exported portably.")
