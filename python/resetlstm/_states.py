"""Framework-free argument handling shared by the front ends' GRU ops."""
from __future__ import annotations


def single_state(initial_state, op: str = "reset_gru"):
    """The GRU's one state tensor from `initial_state`: h0 itself, or a list or tuple holding
    only h0 (the form of Keras' and the LSTM's lists of states); None stays None."""
    if isinstance(initial_state, (list, tuple)):
        if len(initial_state) != 1:
            raise ValueError(f"{op}: `initial_state` must be h0 [B, H] (or a list holding only "
                             f"h0), got a {type(initial_state).__name__} of length "
                             f"{len(initial_state)}")
        return initial_state[0]
    return initial_state
