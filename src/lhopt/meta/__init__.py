"""Meta-training: the policy, episodes, the speedup reward, PPO, and distributed rollouts."""
