"""REINFORCE, the plain policy gradient, on gymnasium's CartPole-v1.

Every episode is reported with ``progress()``: the panel's bar, its charts and the job's
MLflow run get the episode's reward, its length, the mean reward of the last 100 episodes
and the loss, one point per episode. The trained policy is saved to ``out``.

A job runs it through the template beside this file (``trainorch submit
cartpole-reinforce.yaml``) or from a notebook cell (``cartpole.ipynb``); ``python
cartpole_reinforce.py --episodes 50`` runs it here, where ``progress()`` does nothing.
"""

from __future__ import annotations

import argparse
from collections import deque
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from jupyter_trainorch import progress

SOLVED_EPISODES = 100  # CartPole-v1 counts as solved at a mean reward of 475 over 100


def discounted_returns(rewards: list[float], gamma: float) -> torch.Tensor:
    """Each step's discounted return, normalised: a baseline that keeps the variance down."""
    returns, running = [], 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        returns.append(running)
    values = torch.tensor(returns[::-1])
    if len(values) > 1:
        values = (values - values.mean()) / (values.std() + 1e-8)
    return values


def train(
    episodes: int = 500,
    lr: float = 0.01,
    gamma: float = 0.99,
    hidden: int = 64,
    seed: int = 0,
    target_reward: float = 475.0,
    out: str = "policy.pt",
) -> dict[str, Any]:
    """Train a policy for up to ``episodes`` episodes, stopping early once solved."""
    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    env.action_space.seed(seed)
    # A tiny network stepped once per action: the CPU beats a GPU's launch latency here.
    policy = nn.Sequential(
        nn.Linear(env.observation_space.shape[0], hidden),
        nn.Tanh(),
        nn.Linear(hidden, env.action_space.n),
    )
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    recent: deque[float] = deque(maxlen=SOLVED_EPISODES)
    best_mean, episode = 0.0, 0
    for episode in range(1, episodes + 1):
        observation, _ = env.reset(seed=seed * 100_000 + episode)
        log_probs, rewards = [], []
        done = False
        while not done:
            logits = policy(torch.as_tensor(observation, dtype=torch.float32))
            action = torch.distributions.Categorical(logits=logits).sample()
            log_probs.append(torch.log_softmax(logits, dim=-1)[action])
            observation, reward, terminated, truncated, _ = env.step(int(action))
            rewards.append(float(reward))
            done = terminated or truncated
        loss = -(torch.stack(log_probs) * discounted_returns(rewards, gamma)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        reward_sum = sum(rewards)
        recent.append(reward_sum)
        mean = sum(recent) / len(recent)
        best_mean = max(best_mean, mean)
        solved = len(recent) == SOLVED_EPISODES and mean >= target_reward
        progress(
            episode,
            episodes,
            message=f"episode {episode}: reward {reward_sum:.0f}, mean {mean:.1f}",
            reward=reward_sum,
            reward_mean_100=mean,
            episode_length=len(rewards),
            loss=loss.item(),
        )
        if episode % 25 == 0 or solved:
            print(
                f"episode {episode:4d}  reward {reward_sum:5.0f}  mean of last {len(recent)} {mean:6.1f}"
            )
        if solved:
            print(f"solved after {episode} episodes")
            break
    env.close()
    torch.save(policy.state_dict(), out)
    return {"episodes": episode, "final_mean_reward": mean, "best_mean_reward": best_mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="policy.pt")
    args = parser.parse_args()
    print(train(args.episodes, args.lr, args.gamma, args.hidden, args.seed, out=args.out))


if __name__ == "__main__":
    main()
