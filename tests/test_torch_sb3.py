"""resetlstm.torch.sb3.ResetLstmPolicy against sb3-contrib's stock recurrent policy: the same
initial weights for a seed, the same LSTM outputs, values, log-probabilities, entropies and
gradients on a rollout with episode starts (float64, 1e-10), the same data collection steps;
RecurrentPPO trains with it (examples/recurrent_ppo.py, a short run)."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sb3_contrib")
gym = pytest.importorskip("gymnasium")
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy  # noqa: E402
from sb3_contrib.common.recurrent.type_aliases import RNNStates  # noqa: E402
from stable_baselines3.common.torch_layers import FlattenExtractor  # noqa: E402

from resetlstm.torch import ResetLSTM  # noqa: E402
from resetlstm.torch.sb3 import ResetLstmPolicy  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class Float64Features(FlattenExtractor):
    """sb3 preprocesses observations to float32; the features continue in float64 so that the
    policies compare at float64 precision."""

    def forward(self, observations):
        return super().forward(observations).double()


def policies(layers=2, hidden=16, **kwargs):
    """The stock policy and ours, each made right after torch.manual_seed(0): the same weights,
    and the same state of torch's random generator afterwards."""
    obs_space = gym.spaces.Box(-1, 1, (4,))
    kwargs = dict(lstm_hidden_size=hidden, n_lstm_layers=layers,
                  features_extractor_class=Float64Features, **kwargs)
    torch.manual_seed(0)
    stock = RecurrentActorCriticPolicy(obs_space, gym.spaces.Discrete(3), lambda _: 1e-3,
                                       **kwargs).double()
    after_stock = torch.random.get_rng_state()
    torch.manual_seed(0)
    ours = ResetLstmPolicy(obs_space, gym.spaces.Discrete(3), lambda _: 1e-3, **kwargs).double()
    assert torch.equal(torch.random.get_rng_state(), after_stock)
    return stock, ours


def states(layers, n_seq, hidden, seed):
    g = torch.Generator().manual_seed(seed)
    pair = lambda: tuple(torch.randn(layers, n_seq, hidden, generator=g,  # noqa: E731
                                     dtype=torch.float64) for _ in range(2))
    return RNNStates(pair(), pair())


@pytest.mark.parametrize("variant", [dict(), dict(enable_critic_lstm=False, shared_lstm=True),
                                     dict(enable_critic_lstm=False), dict(layers=1)],
                         ids=["critic-lstm", "shared-lstm", "critic-mlp", "1-layer"])
def test_same_rollout_same_values_log_probs_and_gradients(variant):
    layers = variant.pop("layers", 2)
    stock, ours = policies(layers, **variant)
    assert isinstance(ours.lstm_actor, ResetLSTM)
    for (name, a), (_, b) in zip(stock.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name  # the seed gives the stock policy's weights
    n_seq, steps = 4, 9
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(n_seq * steps, 4, generator=g)
    actions = torch.randint(0, 3, (n_seq * steps,), generator=g).double()
    starts = (torch.rand(n_seq * steps, generator=g) < 0.25).float()
    starts[0] = 1.0
    lstm_states = states(layers, n_seq, 16, 2)
    results = []
    for policy in (stock, ours):
        values, log_prob, entropy = policy.evaluate_actions(obs, actions, lstm_states, starts)
        (values.square().sum() + log_prob.sum() + 0.1 * entropy.sum()).backward()
        results.append((values, log_prob, entropy, [p.grad for p in policy.parameters()]))
        # the LSTM itself: outputs and final states of the actor's sequence processing
        features = policy.extract_features(obs)
        results[-1] += (policy._process_sequence(features, lstm_states.pi, starts,
                                                 policy.lstm_actor),)
    (v1, l1, e1, g1, (y1, s1)), (v2, l2, e2, g2, (y2, s2)) = results
    for a, b in ((v1, v2), (l1, l2), (e1, e2), (y1, y2), (s1[0], s2[0]), (s1[1], s2[1])):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-10)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        assert b is not None
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)
    assert all(p.grad.abs().sum() > 0 for p in ours.lstm_actor.parameters())


def test_data_collection_steps_match():
    """forward() one step at a time over 8 environments whose episodes end at random, the way
    RecurrentPPO collects rollouts: the same values, log-probabilities and carried states."""
    stock, ours = policies(1)
    lstm_states = [states(1, 8, 16, 3)] * 2
    g = torch.Generator().manual_seed(4)
    for _ in range(6):
        obs = torch.randn(8, 4, generator=g)
        starts = (torch.rand(8, generator=g) < 0.3).float()
        outs = []
        for i, policy in enumerate((stock, ours)):
            torch.manual_seed(5)
            with torch.no_grad():
                _, values, log_prob, lstm_states[i] = policy(obs, lstm_states[i], starts,
                                                             deterministic=True)
            outs.append((values, log_prob, lstm_states[i].pi[0], lstm_states[i].vf[1]))
        for a, b in zip(*outs):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-10)


def test_recurrent_ppo_trains_with_it():
    """A short RecurrentPPO run on CartPole without velocities (examples/recurrent_ppo.py):
    learning runs end to end, moves every LSTM weight, and the trained model predicts."""
    sys.path.insert(0, EXAMPLES)
    try:
        import recurrent_ppo
    finally:
        sys.path.remove(EXAMPLES)
    model = recurrent_ppo.make_model("resetlstm", seed=0, n_envs=4, n_steps=16, batch_size=32,
                                     n_epochs=2)
    before = {k: v.clone() for k, v in model.policy.lstm_actor.state_dict().items()}
    model.learn(total_timesteps=128)
    assert model.num_timesteps >= 128
    for name, value in model.policy.lstm_actor.state_dict().items():
        assert not torch.equal(value, before[name]), f"{name} did not train"
    assert 0 < recurrent_ppo.evaluate(model, episodes=2) <= 500


def test_training_follows_the_stock_policy():
    """RecurrentPPO from one seed with the stock and the fused policy (float32, episodes ending
    inside the training sequences): the same rollouts, minibatches and updates, so the trained
    parameters agree up to float32 rounding of the different summation orders."""
    sys.path.insert(0, EXAMPLES)
    try:
        import recurrent_ppo
    finally:
        sys.path.remove(EXAMPLES)
    params = []
    for policy in ("stock", "resetlstm"):
        model = recurrent_ppo.make_model(policy, seed=3, n_envs=4, n_steps=32, batch_size=64,
                                         n_epochs=2)
        model.learn(total_timesteps=512)
        params.append(model.policy.state_dict())
    stock, ours = params
    assert stock.keys() == ours.keys()
    for name in stock:
        a, b = stock[name].double(), ours[name].double()
        scale = a.abs().max().clamp_min(1e-3)
        assert (a - b).abs().max() <= 1e-5 * scale, name
