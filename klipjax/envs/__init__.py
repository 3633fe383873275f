"""Environment construction: a gymnax env, its parameters and its action space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from klipjax.engine import cpu_devices
from klipjax.envs.deferred_imports import RENDER_ONLY, deferred

# gymnax computes arrays when imported, which starts JAX's backends: the CPU device
# count (one per core) must be set before.
cpu_devices.configure()
with deferred(*RENDER_ONLY):
    import gymnax
    from gymnax.environments import spaces

from klipjax.config.checks import ConfigError
from klipjax.core.distributions import Categorical, DiagonalGaussian
from klipjax.envs import brax_adapter as brax_envs


class EnvSpec(NamedTuple):
    """Everything the trainer needs to know about an environment."""

    env: Any
    params: Any
    obs_shape: tuple[int, ...]
    distribution: Any  # Categorical or DiagonalGaussian
    action_low: Any  # continuous actions are clipped to [low, high] outside the policy
    action_high: Any

    @property
    def continuous(self) -> bool:
        return isinstance(self.distribution, DiagonalGaussian)


# Environments added by users (any gymnax-compatible Environment), by id.
_REGISTRY: dict[str, Callable[[], tuple[Any, Any]]] = {}


def register(env_id: str, factory: Callable[[], tuple[Any, Any]]) -> None:
    """Makes ``factory() -> (env, env_params)`` available as ``env: <env_id>``.

    The environment must follow gymnax >= 1.0: ``step`` returns ``(obs, state,
    reward, terminated, truncated, info)`` with ``info["final_observation"]``. A
    subclass of gymnax's ``Environment`` that keeps gymnax's ``step`` is evaluated
    with its ``step_env`` and ``is_truncated`` (no reset drawn after an episode's
    end); one that defines its own ``step`` is evaluated with it.
    """
    _REGISTRY[env_id] = factory


def factory_of(env_id: str) -> Callable[[], tuple[Any, Any]] | None:
    """The ``register``ed factory of ``env_id`` (None for gymnax and Brax ids): what
    an id means can change when it is registered anew."""
    return _REGISTRY.get(env_id)


def registered_ids() -> list[str]:
    """Every id ``make`` accepts: gymnax's registry, ``register``ed ones and the
    ``brax/`` ids. The brax ids are listed whether or not brax is installed, so a
    brax config validates anywhere; building one without brax is an ``EnvError``."""
    return list(gymnax.registered_envs) + sorted(_REGISTRY) + brax_envs.ids()


class EnvError(ConfigError):
    """An environment could not be built (e.g. gymnax's MNISTBandit downloads MNIST)."""


def _build(env_id: str) -> tuple[Any, Any]:
    if env_id in _REGISTRY:
        return _REGISTRY[env_id]()
    if env_id.startswith(brax_envs.PREFIX):
        try:
            brax_envs.brax_registry()
        except ImportError as err:
            raise EnvError(
                f"env={env_id!r}: needs brax ({err}); install the optional extra: "
                "pip install -e '.[brax]' (or: pip install brax)"
            ) from err
        return brax_envs.make(env_id)
    return gymnax.make(env_id)


def make(env_id: str) -> EnvSpec:
    """Builds an environment (gymnax >= 1.0: terminated and truncated apart)."""
    try:
        env, params = _build(env_id)
    except EnvError:
        raise
    except Exception as err:  # whatever the env's own constructor raises
        raise EnvError(
            f"env={env_id!r}: could not be built ({type(err).__name__}: {err})"
        ) from err
    obs_shape = tuple(env.observation_space(params).shape)
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(env, params, obs_shape, Categorical(int(space.n)), None, None)
    if isinstance(space, spaces.Box):
        dims = int(np.prod(space.shape)) if space.shape else 1
        low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), (dims,))
        high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), (dims,))
        return EnvSpec(env, params, obs_shape, DiagonalGaussian(dims), low, high)
    raise ValueError(f"{env_id}: unsupported action space {type(space).__name__}")


def env_action(spec: EnvSpec, action):
    """The action sent to the environment: the raw sample, clipped for Box spaces.

    The raw sample stays in the rollout buffer so its log-prob is exact.
    """
    if not spec.continuous:
        return action
    shape = spec.env.action_space(spec.params).shape
    return box_action(action, spec.action_low, spec.action_high, shape)


def box_action(action, low, high, shape):
    """A continuous sample ``[..., dims]`` as a Box env takes it: clipped to ``[low,
    high]`` and shaped like the space (``[...]`` for a scalar space)."""
    clipped = jnp.clip(action, jnp.asarray(low), jnp.asarray(high))
    return clipped.reshape(clipped.shape[:-1] + tuple(shape))


def episode_horizon(spec: EnvSpec) -> int:
    """The most steps an episode can take (the env's time limit): the length of an
    evaluation episode's loop."""
    limit = getattr(spec.params, "max_steps_in_episode", None)
    if limit is None:
        raise EnvError(
            f"{type(spec.env).__name__}: its params have no max_steps_in_episode, "
            "which evaluation needs to bound an episode"
        )
    return int(limit)
