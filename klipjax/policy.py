"""A trained policy on its own: the actor, its observation normalisation and its
action space, as a pure JAX function and as a small self-describing directory.

The same ``Policy`` acts in a sweep's evaluations (built from a run's state inside
the compiled program), in ``Results.policy(run)`` and in ``load_policy(dir)``, so an
exported policy acts exactly as it did in its run.

A policy directory holds two files and no code:

- ``policy.json``: ``format`` ("klipjax-policy"), ``format_version``, the env id,
  observation shape, action space, network shape, whether observations are
  normalised, and where the policy came from;
- ``actor.npz``: the actor's parameters (one array per ``/``-joined parameter
  path) and ``obs_mean`` / ``obs_var``, read with ``allow_pickle=False``, so loading
  a directory someone sent you cannot run code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from klipjax.config.checks import ConfigError
from klipjax.core.distributions import Categorical, DiagonalGaussian
from klipjax.core.networks import Actor
from klipjax.core.normalization import RunningStats
from klipjax.envs import EnvSpec, box_action
from klipjax.outputs.files import write_atomic, write_json

FORMAT = "klipjax-policy"
FORMAT_VERSION = 1
POLICY_FILE = "policy.json"
PARAMS_FILE = "actor.npz"
OBS_KEYS = ("obs_mean", "obs_var")


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """The static shape of a policy: what it observes, its network and its actions."""

    env: str
    obs_shape: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    num_actions: int | None  # discrete actions, or None for a Box space
    action_shape: tuple[int, ...] = ()
    action_low: tuple[float, ...] | None = None  # per dimension, Box spaces only
    action_high: tuple[float, ...] | None = None

    @property
    def continuous(self) -> bool:
        return self.num_actions is None

    @property
    def obs_size(self) -> int:
        return math.prod(self.obs_shape)

    @property
    def distribution(self):
        if self.continuous:
            return DiagonalGaussian(len(self.action_low))
        return Categorical(self.num_actions)

    @property
    def actor(self) -> Actor:
        outputs = len(self.action_low) if self.continuous else self.num_actions
        return Actor(self.hidden_sizes, outputs, self.continuous)

    @classmethod
    def of(cls, env_id: str, spec: EnvSpec, hidden_sizes) -> PolicySpec:
        """The policy of a run on ``spec`` with these hidden layers."""
        if not spec.continuous:
            return cls(
                env_id,
                spec.obs_shape,
                tuple(hidden_sizes),
                spec.distribution.num_actions,
            )
        return cls(
            env_id,
            spec.obs_shape,
            tuple(hidden_sizes),
            None,
            tuple(spec.env.action_space(spec.params).shape),
            tuple(float(x) for x in np.asarray(spec.action_low)),
            tuple(float(x) for x in np.asarray(spec.action_high)),
        )

    def to_dict(self) -> dict[str, Any]:
        action = (
            {
                "type": "box",
                "shape": list(self.action_shape),
                "low": list(self.action_low),
                "high": list(self.action_high),
            }
            if self.continuous
            else {"type": "discrete", "n": self.num_actions}
        )
        return {
            "env": self.env,
            "obs_shape": list(self.obs_shape),
            "action": action,
            "network": {
                "hidden_sizes": list(self.hidden_sizes),
                "activation": "tanh",
                "output": "gaussian mean, state-independent log_std"
                if self.continuous
                else "categorical logits",
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySpec:
        action = data["action"]
        common = (
            str(data["env"]),
            tuple(int(x) for x in data["obs_shape"]),
            tuple(int(x) for x in data["network"]["hidden_sizes"]),
        )
        if action["type"] == "discrete":
            return cls(*common, int(action["n"]))
        if action["type"] == "box":
            return cls(
                *common,
                None,
                tuple(int(x) for x in action["shape"]),
                tuple(float(x) for x in action["low"]),
                tuple(float(x) for x in action["high"]),
            )
        raise ValueError(f"action type {action['type']!r}")


@struct.dataclass
class Policy:
    """A trained actor with its observation normalisation.

    A pytree (parameters and statistics are leaves, ``spec`` is static), so it can
    be passed into ``jax.jit`` and ``jax.vmap`` as well as closed over.
    """

    actor_params: Any
    obs_stats: RunningStats
    normalize_obs: jax.Array  # bool scalar: apply obs_stats before the actor
    spec: PolicySpec = struct.field(pytree_node=False)

    def dist_params(self, obs: jax.Array) -> jax.Array:
        """The actor's output for a batch ``[batch, *obs_shape]``, after the run's
        normalisation (``(obs - mean) / sqrt(var + 1e-8)``, clipped to +-10)."""
        flat = obs.reshape(obs.shape[0], self.spec.obs_size).astype(jnp.float32)
        seen = jnp.where(self.normalize_obs, self.obs_stats.normalize(flat), flat)
        return self.spec.actor.apply(self.actor_params, seen)

    def act(self, obs, key: jax.Array | None = None, deterministic=True):
        """The action for one observation ``[*obs_shape]`` or a batch of them.

        Deterministic: the most likely action (argmax, or the Gaussian mean clipped
        to the bounds). Stochastic (``deterministic=False``, needs ``key``): a sample,
        clipped to the bounds for Box spaces. ``deterministic`` may also be a bool
        array ``[batch]``, one mode per observation. Pure: ``jax.jit(policy.act,
        static_argnames="deterministic")`` compiles it.
        """
        obs = jnp.asarray(obs)
        single = obs.ndim == len(self.spec.obs_shape)
        if not single and obs.shape[1:] != self.spec.obs_shape:
            raise ValueError(
                f"obs shape {obs.shape}: expected {self.spec.obs_shape} or "
                f"[batch, *{self.spec.obs_shape}]"
            )
        batch = obs[None] if single else obs
        dist_params = self.dist_params(batch)
        dist = self.spec.distribution
        action = dist.mode(dist_params)
        if deterministic is not True:
            if key is None:
                raise ValueError("a stochastic action needs a key")
            sample = dist.sample(key, dist_params)
            if deterministic is False:
                action = sample
            else:
                greedy = jnp.asarray(deterministic).reshape(-1)
                greedy = greedy.reshape(greedy.shape + (1,) * (action.ndim - 1))
                action = jnp.where(greedy, action, sample)
        if self.spec.continuous:
            action = box_action(
                action,
                self.spec.action_low,
                self.spec.action_high,
                self.spec.action_shape,
            )
        return action[0] if single else action

    def render(self, path: str | os.PathLike[str], **options) -> dict:
        """Draws one episode to ``path`` (see ``klipjax.outputs.render.render``)."""
        from klipjax.outputs.render import render  # matplotlib only when drawing

        return render(self, path, **options)

    def save(
        self, directory: str | os.PathLike[str], source: dict | None = None
    ) -> Path:
        """Writes the policy directory (see the module docstring); ``source`` says
        where the policy came from (run directory, run, its hyperparameters)."""
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{str(out)!r} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        arrays = {
            "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(self.actor_params)
        }
        arrays["obs_mean"] = np.asarray(self.obs_stats.mean, np.float32)
        arrays["obs_var"] = np.asarray(self.obs_stats.var, np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(out / PARAMS_FILE, buffer.getvalue())
        from klipjax import __version__

        write_json(
            out / POLICY_FILE,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "klipjax_version": __version__,
                **self.spec.to_dict(),
                "normalize_obs": bool(self.normalize_obs),
                "params_file": PARAMS_FILE,
                "source": source or {},
            },
        )
        return out


def load_policy(directory: str | os.PathLike[str]) -> Policy:
    """Reads a policy directory written by ``Policy.save`` / ``klipjax export``.

    Raises:
        ConfigError: Not a policy directory, another format version, or parameters
            that do not fit the network it describes.
    """
    path = Path(directory)
    meta_path = path / POLICY_FILE
    if not meta_path.is_file():
        raise ConfigError(f"{str(path)!r} is not a policy directory (no {POLICY_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{meta_path}: not readable JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_path}: not a klipjax policy (format {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{meta_path}: policy format version {meta.get('format_version')!r} "
            f"(written by klipjax {meta.get('klipjax_version', '?')}); this klipjax "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        spec = PolicySpec.from_dict(meta)
        with np.load(path / PARAMS_FILE, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise ConfigError(f"{path}: incomplete policy ({type(err).__name__}: {err})")
    expected = jax.eval_shape(
        spec.actor.init, jax.random.PRNGKey(0), jnp.zeros(spec.obs_size)
    )

    def stored_leaf(key_path, shape):
        name = "/".join(str(getattr(k, "key", k)) for k in key_path)
        if name not in arrays or arrays[name].shape != shape.shape:
            found = arrays[name].shape if name in arrays else "missing"
            raise ConfigError(
                f"{path}/{PARAMS_FILE}: {name} is {found}, the network in "
                f"{POLICY_FILE} needs {shape.shape}"
            )
        return jnp.asarray(arrays[name], shape.dtype)

    params = jax.tree_util.tree_map_with_path(stored_leaf, expected)
    for name in OBS_KEYS:
        if name not in arrays or arrays[name].shape != (spec.obs_size,):
            raise ConfigError(f"{path}/{PARAMS_FILE}: {name} missing or misshapen")
    stats = RunningStats(
        jnp.asarray(arrays["obs_mean"]),
        jnp.asarray(arrays["obs_var"]),
        jnp.asarray(1.0),
    )
    return Policy(params, stats, jnp.asarray(bool(meta["normalize_obs"])), spec)


__all__ = ["Policy", "PolicySpec", "load_policy"]
