"""PPO with an LSTM in CleanRL's single-file style (ppo_atari_lstm.py's structure), on CartPole-v1
without its velocities (the agent sees the cart position and the pole angle, so it has to
infer the velocities from its history), where the training pass over the rollout is one fused
call: ``resetlstm.torch.ResetLSTM`` with the episode starts (``dones``) as ``resets``.

CleanRL's agent loops over the rollout's time steps in Python and multiplies the LSTM state by
``1 - done`` before each step, in the rollout and, for every minibatch and epoch, in the
training pass. ``ResetLSTM`` is a drop-in for ``torch.nn.LSTM`` (the same parameters and
``state_dict``) that takes ``resets`` [T, B]: True at (t, b) zeroes row b's state before step t,
which is what the multiplication does (no gradient crosses it either). The change is in
``Agent.get_states``; ``--loop`` runs CleanRL's loop over ``torch.nn.LSTM`` instead.

    python examples/ppo_lstm_cleanrl.py                      # fused, seed 1, 100k steps
    python examples/ppo_lstm_cleanrl.py --loop               # the per-step loop, nn.LSTM
    python examples/ppo_lstm_cleanrl.py --total-timesteps 20000 --seed 2 --json out.json

Prints progress (steps, episodes' mean return, steps per second) and, at the end, the training
speed (environment steps per second over the whole run, rollouts and updates) and the mean
return of the last 20 finished episodes (500 is the maximum). Hyperparameters: RL Baselines3
Zoo's for RecurrentPPO on CartPoleNoVel-v1 (8 envs, 32 steps, 20 epochs, gamma 0.98, GAE 0.8,
learning rate and clip range 1e-3 and 0.2 annealed to 0, LSTM 64).
"""
from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from resetlstm.torch import ResetLSTM


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=100_000)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=32, help="rollout length per env")
    p.add_argument("--num-minibatches", type=int, default=1, help="env minibatches per epoch")
    p.add_argument("--update-epochs", type=int, default=20)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=0.98)
    p.add_argument("--gae-lambda", type=float, default=0.8)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.0)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--hidden-size", type=int, default=64, help="LSTM units")
    p.add_argument("--loop", action="store_true",
                   help="CleanRL's per-step loop over torch.nn.LSTM instead of one fused call")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the run's figures to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                 "hidden_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, received "
                    f"{getattr(args, name)}")
    if args.num_envs % args.num_minibatches:
        p.error(f"--num-envs ({args.num_envs}) must be a multiple of --num-minibatches "
                f"({args.num_minibatches}): each minibatch holds whole env streams")
    return args


class MaskVelocity(gym.ObservationWrapper):
    """CartPole's observation without the two velocities: (cart position, pole angle)."""

    def __init__(self, env):
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = gym.spaces.Box(low[[0, 2]], high[[0, 2]], dtype=np.float32)

    def observation(self, observation):
        return observation[[0, 2]].astype(np.float32)


def make_env():
    return MaskVelocity(gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1")))


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """An MLP encoder, an LSTM, actor and critic heads. ``fused``: the LSTM is
    ``resetlstm.torch.ResetLSTM`` and every sequence runs in one call; otherwise
    ``torch.nn.LSTM`` stepped in a Python loop with the state multiplied by ``1 - done``."""

    def __init__(self, obs_dim, num_actions, hidden_size=64, fused=True):
        super().__init__()
        self.fused = fused
        self.network = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh())
        self.lstm = (ResetLSTM if fused else nn.LSTM)(64, hidden_size)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.actor = layer_init(nn.Linear(hidden_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def get_states(self, x, lstm_state, done):
        """x [T*B, obs] and done [T*B] (time-major, flattened), lstm_state (h, c) [1, B, H]:
        the LSTM's outputs [T*B, H] and its final state."""
        hidden = self.network(x)
        batch = lstm_state[0].shape[1]
        hidden = hidden.reshape((-1, batch, hidden.shape[-1]))   # [T, B, F]
        done = done.reshape((-1, batch))                          # [T, B]
        if self.fused:  # one call; done[t, b] zeroes row b's state before step t
            out, lstm_state = self.lstm(hidden, lstm_state, resets=done)
            return out.reshape(-1, out.shape[-1]), lstm_state
        outputs = []
        for h, d in zip(hidden, done):  # CleanRL's loop
            keep = (1.0 - d).view(1, -1, 1)
            h, lstm_state = self.lstm(h.unsqueeze(0), (keep * lstm_state[0],
                                                       keep * lstm_state[1]))
            outputs.append(h)
        return torch.flatten(torch.cat(outputs), 0, 1), lstm_state

    def get_value(self, x, lstm_state, done):
        hidden, _ = self.get_states(x, lstm_state, done)
        return self.critic(hidden)

    def get_action_and_value(self, x, lstm_state, done, action=None):
        hidden, lstm_state = self.get_states(x, lstm_state, done)
        probs = torch.distributions.Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state


def train(args):
    """Runs PPO; returns the run's figures (speed, returns, the per-update log)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    envs = gym.vector.SyncVectorEnv([make_env for _ in range(args.num_envs)])
    obs_dim, num_actions = envs.single_observation_space.shape[0], envs.single_action_space.n
    agent = Agent(obs_dim, num_actions, args.hidden_size, fused=not args.loop)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    T, B = args.num_steps, args.num_envs
    batch_size = T * B
    num_updates = max(1, args.total_timesteps // batch_size)

    obs = torch.zeros((T, B, obs_dim))
    actions = torch.zeros((T, B), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((T, B)) for _ in range(4))
    next_obs, _ = envs.reset(seed=[args.seed + i for i in range(B)])
    envs.action_space.seed(args.seed)
    next_obs = torch.as_tensor(next_obs)
    next_done = torch.ones(B)  # every env starts an episode: its state starts from zeros
    next_lstm_state = (torch.zeros(1, B, args.hidden_size), torch.zeros(1, B, args.hidden_size))
    episode_returns, log = [], []
    start = time.perf_counter()
    for update in range(1, num_updates + 1):
        frac = 1.0 - (update - 1.0) / num_updates
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        clip = frac * args.clip_coef
        initial_lstm_state = (next_lstm_state[0].clone(), next_lstm_state[1].clone())
        for step in range(T):
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value, next_lstm_state = agent.get_action_and_value(
                    next_obs, next_lstm_state, next_done)
            values[step], actions[step], logprobs[step] = value.flatten(), action, logprob
            next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            next_obs = torch.as_tensor(next_obs)
            next_done = torch.as_tensor(np.logical_or(terminated, truncated), dtype=torch.float32)
            if "episode" in info:
                finished = info["_episode"]
                episode_returns.extend(float(r) for r in info["episode"]["r"][finished])

        with torch.no_grad():  # GAE, bootstrapped from the value after the rollout
            next_value = agent.get_value(next_obs, next_lstm_state, next_done).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            last = 0.0
            for t in reversed(range(T)):
                if t == T - 1:
                    not_done, following = 1.0 - next_done, next_value
                else:
                    not_done, following = 1.0 - dones[t + 1], values[t + 1]
                delta = rewards[t] + args.gamma * following * not_done - values[t]
                last = delta + args.gamma * args.gae_lambda * not_done * last
                advantages[t] = last
            returns = advantages + values

        b_obs, b_logprobs = obs.reshape((-1, obs_dim)), logprobs.reshape(-1)
        b_actions, b_dones = actions.reshape(-1), dones.reshape(-1)
        b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)
        envs_per_batch = B // args.num_minibatches
        env_index = np.arange(B)
        flat_index = np.arange(batch_size).reshape(T, B)
        for _ in range(args.update_epochs):
            np.random.shuffle(env_index)
            for first in range(0, B, envs_per_batch):
                mb_envs = env_index[first:first + envs_per_batch]
                mb = flat_index[:, mb_envs].ravel()  # whole env streams, time-major
                _, new_logprob, entropy, new_value, _ = agent.get_action_and_value(
                    b_obs[mb], (initial_lstm_state[0][:, mb_envs],
                                initial_lstm_state[1][:, mb_envs]),
                    b_dones[mb], b_actions[mb])
                ratio = (new_logprob - b_logprobs[mb]).exp()
                adv = b_advantages[mb]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio,
                                    -adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
                v_loss = 0.5 * ((new_value.view(-1) - b_returns[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        steps = update * batch_size
        recent = float(np.mean(episode_returns[-20:])) if episode_returns else float("nan")
        elapsed = time.perf_counter() - start
        log.append(dict(steps=steps, mean_return=recent, seconds=elapsed))
        if not args.quiet and (update % max(1, num_updates // 10) == 0 or update == num_updates):
            print(f"steps {steps:>7}  mean return (last 20 episodes) {recent:6.1f}  "
                  f"{steps / elapsed:6.0f} steps/s", flush=True)
    envs.close()
    elapsed = time.perf_counter() - start
    return dict(mode="loop" if args.loop else "fused", seed=args.seed,
                steps=num_updates * batch_size, seconds=elapsed,
                steps_per_second=num_updates * batch_size / elapsed,
                final_mean_return=float(np.mean(episode_returns[-20:])),
                episodes=len(episode_returns), log=log)


def main(argv=None):
    args = parse_args(argv)
    result = train(args)
    print(f"{result['mode']}: {result['steps']} steps in {result['seconds']:.1f} s "
          f"({result['steps_per_second']:.0f} steps/s), mean return of the last 20 episodes "
          f"{result['final_mean_return']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
