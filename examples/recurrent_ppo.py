"""Recurrent PPO (sb3-contrib) on a task that needs memory, with the stock LSTM policy and with
resetlstm's fused one: CartPole-v1 with the velocities masked out (the agent sees the cart
position and the pole angle only, so it must infer the velocities from its history).

    python examples/recurrent_ppo.py                        # both policies, 3 seeds, 100k steps
    python examples/recurrent_ppo.py --policy resetlstm --seeds 0 --timesteps 20000

Prints, per policy and seed, the training speed (environment steps per second over the whole
run, rollouts and updates) and the mean return of 20 evaluation episodes (deterministic
actions; 500 is the maximum). Hyperparameters: RL Baselines3 Zoo's for RecurrentPPO on
CartPoleNoVel-v1.
"""
import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

from resetlstm.torch.sb3 import ResetLstmPolicy

POLICIES = {"stock": "MlpLstmPolicy", "resetlstm": ResetLstmPolicy}


class MaskVelocity(gym.ObservationWrapper):
    """CartPole's observation without the two velocities: (cart position, pole angle)."""

    def __init__(self, env):
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = gym.spaces.Box(low[[0, 2]], high[[0, 2]], dtype=np.float32)

    def observation(self, observation):
        return observation[[0, 2]].astype(np.float32)


def make_env(n_envs, seed):
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, wrapper_class=MaskVelocity)


def make_model(policy, seed, n_envs=8, n_steps=32, batch_size=256, n_epochs=20):
    def linear(start):
        return lambda progress: progress * start

    return RecurrentPPO(
        POLICIES[policy], make_env(n_envs, seed), n_steps=n_steps, batch_size=batch_size,
        n_epochs=n_epochs, gamma=0.98, gae_lambda=0.8, ent_coef=0.0,
        learning_rate=linear(1e-3), clip_range=linear(0.2),
        policy_kwargs=dict(ortho_init=False, activation_fn=torch.nn.ReLU, lstm_hidden_size=64,
                           enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])),
        seed=seed, device="cpu")


def evaluate(model, episodes=20, seed=1000):
    env = make_env(1, seed)
    returns, total = [], 0.0
    obs = env.reset()
    state, start = None, np.ones((1,), bool)
    while len(returns) < episodes:
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        obs, reward, done, _ = env.step(action)
        total += float(reward[0])
        start = done
        if done[0]:
            returns.append(total)
            total = 0.0
    return float(np.mean(returns))


def train(policy, seed, timesteps, **kwargs):
    model = make_model(policy, seed, **kwargs)
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    seconds = time.perf_counter() - start
    return {"policy": policy, "seed": seed, "timesteps": model.num_timesteps,
            "seconds": round(seconds, 1), "fps": round(model.num_timesteps / seconds),
            "mean_return": evaluate(model)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=["stock", "resetlstm", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.timesteps < 1:
        parser.error(f"--timesteps must be >= 1, got {args.timesteps}")
    policies = ["stock", "resetlstm"] if args.policy == "both" else [args.policy]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CartPole-v1 without "
          f"velocities, {args.timesteps} steps per run", flush=True)
    results = []
    for seed in args.seeds:
        for policy in policies:  # interleaved, so machine noise hits both alike
            r = train(policy, seed, args.timesteps)
            results.append(r)
            print(f"  {policy:9s} seed {seed}: {r['fps']:6d} steps/s, mean return "
                  f"{r['mean_return']:6.1f} ({r['seconds']} s)", flush=True)
    for policy in policies:
        rs = [r for r in results if r["policy"] == policy]
        print(f"{policy:9s}: median {np.median([r['fps'] for r in rs]):.0f} steps/s, mean "
              f"return {np.mean([r['mean_return'] for r in rs]):.1f} over seeds {args.seeds}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
