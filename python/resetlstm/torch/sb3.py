"""Recurrent PPO without the per-step loop: policies for sb3-contrib's ``RecurrentPPO`` whose LSTMs
are ``resetlstm.torch.ResetLSTM`` and whose sequence processing is one fused call with the
episode starts as resets.

sb3-contrib's ``RecurrentActorCriticPolicy._process_sequence`` runs ``nn.LSTM`` one time step at
a time in Python whenever an episode starts inside a sequence, multiplying the state by
``1 - episode_start`` before each step. Here the whole sequence is one call of the fused kernel
(forward and backward), which zeroes the state of every row at its episode starts, in every
layer; same results (the reset is a select, so unlike the product it also stops a NaN or Inf)::

    from sb3_contrib import RecurrentPPO
    from resetlstm.torch.sb3 import ResetLstmPolicy
    model = RecurrentPPO(ResetLstmPolicy, env)          # instead of "MlpLstmPolicy"

Needs ``sb3-contrib`` (``pip install sb3-contrib``).
"""
from __future__ import annotations

import torch
from torch import nn

try:
    from sb3_contrib.common.recurrent.policies import (RecurrentActorCriticCnnPolicy,
                                                       RecurrentActorCriticPolicy,
                                                       RecurrentMultiInputActorCriticPolicy)
except ImportError as e:  # pragma: no cover - exercised only without sb3-contrib
    raise ImportError("resetlstm.torch.sb3 needs sb3-contrib: pip install sb3-contrib") from e

from resetlstm.torch.lstm import ResetLSTM

__all__ = ["ResetLstmPolicy", "ResetLstmCnnPolicy", "ResetLstmMultiInputPolicy"]


def _fused(lstm: nn.LSTM) -> ResetLSTM:
    """A ResetLSTM with `lstm`'s configuration, weights, device and dtype. Made without drawing
    from torch's random generator (its own initialisation is overwritten), so that a policy made
    with a seed starts from exactly the stock policy's weights and draws the same random numbers
    afterwards (actions, minibatches)."""
    with torch.random.fork_rng(devices=[]):
        fused = ResetLSTM(lstm.input_size, lstm.hidden_size, num_layers=lstm.num_layers,
                          bias=lstm.bias, batch_first=lstm.batch_first, dropout=lstm.dropout,
                          bidirectional=lstm.bidirectional, device=lstm.weight_ih_l0.device,
                          dtype=lstm.weight_ih_l0.dtype)
    fused.load_state_dict(lstm.state_dict())
    return fused


class _FusedSequences:
    """Replaces the policy's LSTMs by ResetLSTMs and its per-step loop by one fused call."""

    def __init__(self, observation_space, action_space, lr_schedule, *args, **kwargs):
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)
        self._use_fused_lstms(lr_schedule)

    def _use_fused_lstms(self, lr_schedule) -> None:
        self.lstm_actor = _fused(self.lstm_actor)
        if self.lstm_critic is not None:
            self.lstm_critic = _fused(self.lstm_critic)
        # the optimizer the base class made holds the replaced parameters
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),
                                              **self.optimizer_kwargs)

    @staticmethod
    def _process_sequence(features: torch.Tensor, lstm_states: tuple[torch.Tensor, torch.Tensor],
                          episode_starts: torch.Tensor, lstm: ResetLSTM
                          ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The LSTM over the sequences of a (padded) batch: features [n_seq * T, features],
        states ([layers, n_seq, H], [layers, n_seq, H]), episode_starts [n_seq * T] (0/1; a
        start resets that row's state before its step). Returns (outputs [n_seq * T, H],
        final states), as sb3-contrib's loop does."""
        n_seq = lstm_states[0].shape[1]
        # (n_seq * T, features) -> (T, n_seq, features), the time-major layout of the LSTM
        sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
        output, lstm_states = lstm(sequence, lstm_states, resets=starts)
        return torch.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), lstm_states


class ResetLstmPolicy(_FusedSequences, RecurrentActorCriticPolicy):
    """sb3-contrib's ``MlpLstmPolicy`` (``RecurrentActorCriticPolicy``, same arguments and
    parameters) with fused sequence processing."""


class ResetLstmCnnPolicy(_FusedSequences, RecurrentActorCriticCnnPolicy):
    """sb3-contrib's ``CnnLstmPolicy`` with fused sequence processing."""


class ResetLstmMultiInputPolicy(_FusedSequences, RecurrentMultiInputActorCriticPolicy):
    """sb3-contrib's ``MultiInputLstmPolicy`` with fused sequence processing."""
