"""Tiny gymnax-style environments whose correct values are known in closed form."""

import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 5
    terminate_at: int = 0  # 0: never terminates, only time-limit truncation


class ConstantReward(environment.Environment):
    """Reward 1 every step, constant observation.

    With ``terminate_at = 0`` episodes only end by truncation, so the true value of
    every state is ``1 / (1 - gamma)``: a learner that treats truncation as
    termination learns less (the steps-to-go average of ``(1 - gamma^k)/(1 - gamma)``).
    With ``terminate_at = k`` the episode terminates after k steps: two-step
    discounting with k = 2 gives ``V = 1 + gamma`` at the start.
    """

    @property
    def default_params(self):
        return ProbeParams()

    def reward(self, action):
        del action
        return jnp.asarray(1.0)

    def step_env(self, key, state, action, params):
        state = ProbeState(time=state.time + 1)
        terminated = jnp.logical_and(
            params.terminate_at > 0, state.time >= params.terminate_at
        )
        return self.get_obs(state), state, self.reward(action), terminated, {}

    def reset_env(self, key, params):
        state = ProbeState(time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.zeros((1,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


def constant_reward(max_steps=5, terminate_at=0):
    def factory():
        return ConstantReward(), ProbeParams(max_steps, terminate_at)

    return factory


class ActionReward(ConstantReward):
    """Reward = the action taken (discrete 0/1, or a Box action in [-1, 1]),
    constant observation, episodes of ``max_steps_in_episode`` steps or terminated
    after ``terminate_at``: a policy's return is known from its action alone."""

    def __init__(self, continuous: bool = False):
        super().__init__()
        self.continuous = continuous

    def reward(self, action):
        return jnp.sum(jnp.asarray(action, jnp.float32))

    def action_space(self, params=None):
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (1,), jnp.float32)
        return super().action_space(params)


def action_reward(max_steps=5, terminate_at=0, continuous=False):
    def factory():
        return ActionReward(continuous), ProbeParams(max_steps, terminate_at)

    return factory


__all__ = ["ActionReward", "ConstantReward", "action_reward", "constant_reward"]
