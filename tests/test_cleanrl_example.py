"""examples/ppo_lstm_cleanrl.py: the fused training pass (ResetLSTM with the dones as resets)
against CleanRL's per-step loop over torch.nn.LSTM (the state multiplied by 1 - done before
each step): the same outputs, final state and gradients on rollouts with episode ends; and a
short run of the example in both modes."""
import importlib.util
import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(os.path.dirname(HERE), "examples", "ppo_lstm_cleanrl.py")


def example():
    spec = importlib.util.spec_from_file_location("ppo_lstm_cleanrl", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("T, B", [(32, 8), (5, 1), (1, 4)])
def test_fused_training_pass_equals_the_per_step_loop(T, B):
    ex = example()
    torch.manual_seed(0)
    loop = ex.Agent(2, 2, hidden_size=16, fused=False).double()
    fused = ex.Agent(2, 2, hidden_size=16, fused=True).double()
    fused.load_state_dict(loop.state_dict())  # ResetLSTM takes nn.LSTM's state_dict as it is
    g = torch.Generator().manual_seed(T * 10 + B)
    x = torch.randn(T * B, 2, generator=g, dtype=torch.float64)
    done = (torch.rand(T * B, generator=g) < 0.15).double()
    done[:B] = 1.0 if T > 1 else done[:B]  # episode starts at the first step too
    if T > 2:
        done[2 * B] = 1.0  # env 0 ends an episode after step 1
    state = tuple(torch.randn(1, B, 16, generator=g, dtype=torch.float64) for _ in range(2))
    actions = torch.randint(0, 2, (T * B,), generator=g)

    results = {}
    for name, agent in (("loop", loop), ("fused", fused)):
        agent.zero_grad()
        h0 = tuple(s.clone().requires_grad_(True) for s in state)
        _, logprob, entropy, value, (h, c) = agent.get_action_and_value(x, h0, done, actions)
        loss = logprob.sum() + 0.3 * entropy.sum() + (value ** 2).sum() + h.sum() + 2 * c.sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in agent.named_parameters()}
        results[name] = (logprob.detach(), value.detach(), h.detach(), c.detach(), grads,
                         h0[0].grad, h0[1].grad)
    (lp_a, v_a, h_a, c_a, g_a, dh_a, dc_a) = results["loop"]
    (lp_b, v_b, h_b, c_b, g_b, dh_b, dc_b) = results["fused"]
    for a, b in ((lp_a, lp_b), (v_a, v_b), (h_a, h_b), (c_a, c_b), (dh_a, dh_b), (dc_a, dc_b)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    assert set(g_a) == set(g_b)
    for name in g_a:
        assert g_a[name].abs().sum() > 0, name
        torch.testing.assert_close(g_b[name], g_a[name], rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("mode", [[], ["--loop"]])
def test_a_short_run_trains_in_both_modes(mode, tmp_path):
    ex = example()
    result = ex.main(["--total-timesteps", "1024", "--update-epochs", "2", "--quiet",
                      "--json", str(tmp_path / "r.json"), *mode])
    assert result["mode"] == ("loop" if mode else "fused")
    assert result["steps"] == 1024 and result["episodes"] > 10
    assert math.isfinite(result["final_mean_return"]) and result["final_mean_return"] > 5
    assert (tmp_path / "r.json").stat().st_size > 0


def test_arguments_are_checked():
    ex = example()
    with pytest.raises(SystemExit):
        ex.parse_args(["--num-envs", "6", "--num-minibatches", "4"])
    with pytest.raises(SystemExit):
        ex.parse_args(["--num-steps", "0"])
