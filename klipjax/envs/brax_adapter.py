"""Brax environments behind the gymnax >= 1.0 interface (``env: brax/<name>[@backend]``).

Brax's own wrappers are not used: its auto-reset overwrites the final observation of
an episode (and restarts every episode from one stored first state). Here the raw
Brax env supplies physics, reward and termination; the time limit, the split of
``terminated`` from ``truncated``, the auto-reset (a fresh random start) and
``info["final_observation"]`` come from gymnax's ``Environment.step``, so a Brax task
bootstraps exactly like a gymnax one.

brax (the optional extra ``pip install -e '.[brax]'``) is imported when an env is
built, so ids can be listed and configs validated without it.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import warnings

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

PREFIX = "brax/"
# brax.envs' registry (brax 0.12 to 0.14), known without importing brax.
TASKS = (
    "ant",
    "fast",
    "halfcheetah",
    "hopper",
    "humanoid",
    "humanoidstandup",
    "inverted_double_pendulum",
    "inverted_pendulum",
    "pusher",
    "reacher",
    "swimmer",
    "walker2d",
)
BACKENDS = ("mjx", "generalized", "positional", "spring")
# The default is a MuJoCo-faithful backend: "mjx" (MuJoCo's own solver in JAX, the
# simulator of the paper's numbers) or "generalized" (brax's default), whichever steps
# faster on CPU (vmapped over 20 envs, 2 cores): mjx 14k vs 6.9k steps/s on ant, 7.5k
# vs 2.5k on humanoid, within 15% on halfcheetah and hopper; walker2d 3.3k vs 6.6k.
# "positional" and "spring" are cruder approximations (on hopper and walker2d with
# timesteps brax never tuned for them): opt in with "@positional" / "@spring".
DEFAULT_BACKEND = "mjx"
DEFAULT_BACKEND_OF = {"walker2d": "generalized", "swimmer": "generalized"}
MAX_STEPS_IN_EPISODE = 1000
# jaxlib (0.10) splits a large batch of one LAPACK call (Brax's physics factorises
# and solves with an nv x nv mass matrix per env: Cholesky, triangular solves) into
# tasks on XLA's CPU thread pool, and the calling pool thread waits for them: two
# such calls at once (one per CPU device, or two in one program) on a 2-core
# machine's 2-thread pool wait for each other forever. Where a batch starts being
# split depends on the kernel and the matrix size, and near that size it hangs only
# sometimes. Batches of 10 envs per device (the paper's 20 runs of one env on two
# devices) trained ant, humanoid and walker2d for 1M steps without a hang; a
# walker2d evaluation of 400 envs per device hung.
BRAX_CPU_STEP_BATCH = 10


@struct.dataclass
class BraxState(environment.EnvState):
    # The leaves of a brax.envs.State (physics, obs, metrics) except the empty ones
    # (mjx's ``act`` of a model without activations): orbax cannot checkpoint those.
    leaves: tuple
    time: int


@struct.dataclass
class BraxParams(environment.EnvParams):
    max_steps_in_episode: int = MAX_STEPS_IN_EPISODE


def brax_registry():
    """``brax.envs``, imported on first use (raises ImportError without the extra)."""
    # mujoco.mjx prints "Failed to import warp" to stdout when NVIDIA Warp's optional
    # kernels are absent; they are unused here, and stdout belongs to the caller.
    with contextlib.redirect_stdout(io.StringIO()):
        from brax import envs

    return envs


@contextlib.contextmanager
def _quiet_model_build():
    """While brax compiles a model: MuJoCo's compiler warnings go to Python's
    warnings instead of a MUJOCO_LOG.TXT in the working directory; two known ones are
    not repeated on every run: halfcheetah's asset uses the deprecated
    ``settotalmass``, and brax says its own envs are in maintenance mode (README)."""
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(
        lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=2)
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Brax System, piplines", UserWarning)
            warnings.filterwarnings("ignore", "MuJoCo: compiler attribute 'settotal")
            yield
    finally:
        mujoco.set_mju_user_warning(previous)


def ids() -> list[str]:
    """Every ``brax/<name>`` and ``brax/<name>@<backend>`` id, brax installed or not
    (plus envs registered with brax at runtime once brax is imported)."""
    tasks = set(TASKS)
    if "brax.envs" in sys.modules:
        tasks |= set(sys.modules["brax.envs"]._envs)
    return [
        PREFIX + name + suffix
        for name in sorted(tasks)
        for suffix in ("", *(f"@{b}" for b in BACKENDS))
    ]


def parse_id(env_id: str) -> tuple[str, str]:
    """``brax/ant@mjx`` -> ``("ant", "mjx")``; no suffix picks the default backend."""
    name, _, backend = env_id.removeprefix(PREFIX).partition("@")
    return name, backend or DEFAULT_BACKEND_OF.get(name, DEFAULT_BACKEND)


class BraxEnv(environment.Environment[BraxState, BraxParams]):
    """One raw Brax env; ``step``/``reset`` are gymnax's (auto-reset, time limit)."""

    def __init__(self, name: str, backend: str):
        brax_envs = brax_registry()
        if name not in brax_envs._envs:
            known = ", ".join(sorted(brax_envs._envs))
            raise ValueError(f"no brax env {name!r} (brax has {known})")
        if backend not in BACKENDS:
            raise ValueError(
                f"backend {backend!r} unknown (choose from {', '.join(BACKENDS)})"
            )
        self.brax_name, self.backend = name, backend
        with _quiet_model_build():
            self.brax_env = brax_envs.get_environment(name, backend=backend)
        first = jax.eval_shape(self.brax_env.reset, jax.random.PRNGKey(0))
        self._obs_shape = tuple(first.obs.shape)
        leaves, self._treedef = jax.tree.flatten(first)
        self._empty = {
            i: leaf for i, leaf in enumerate(leaves) if math.prod(leaf.shape) == 0
        }
        self._action_shape = (int(self.brax_env.action_size),)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.brax_name}@{self.backend}"

    @property
    def default_params(self) -> BraxParams:
        return BraxParams()

    def brax_state(self, state: BraxState):
        """The brax.envs.State inside ``state``."""
        stored = iter(state.leaves)
        leaves = [
            jnp.zeros(self._empty[i].shape, self._empty[i].dtype)
            if i in self._empty
            else next(stored)
            for i in range(self._treedef.num_leaves)
        ]
        return jax.tree.unflatten(self._treedef, leaves)

    def _wrap(self, brax_state, time) -> BraxState:
        leaves = jax.tree.leaves(brax_state)
        kept = tuple(leaf for i, leaf in enumerate(leaves) if i not in self._empty)
        return BraxState(leaves=kept, time=time)

    def reset_env(self, key, params):
        brax_state = self.brax_env.reset(key)
        return brax_state.obs, self._wrap(brax_state, 0)

    def step_env(self, key, state, action, params):
        brax_state = self.brax_env.step(self.brax_state(state), action)
        terminated = brax_state.done > 0.5
        new_state = self._wrap(brax_state, state.time + 1)
        return brax_state.obs, new_state, brax_state.reward, terminated, {}

    def is_terminated(self, state, params):
        return self.brax_state(state).done > 0.5

    def observation_space(self, params) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, self._obs_shape, jnp.float32)

    def action_space(self, params) -> spaces.Box:
        # Every brax env takes actions in [-1, 1]: humanoid, pusher and the inverted
        # pendulum rescale them to their control ranges, the others' ranges are +-1.
        return spaces.Box(-1.0, 1.0, self._action_shape, jnp.float32)


def safe_step_batch(env_id: str) -> int | None:
    """How many envs of ``env_id`` one device may step at once on this backend
    without risking jaxlib's LAPACK deadlock (above); None: any number (not a Brax
    env, or not on a CPU)."""
    if not env_id.startswith(PREFIX) or jax.default_backend() != "cpu":
        return None
    return BRAX_CPU_STEP_BATCH


def make(env_id: str) -> tuple[BraxEnv, BraxParams]:
    """``brax/<name>[@backend]`` -> ``(env, params)``, like ``gymnax.make``."""
    env = BraxEnv(*parse_id(env_id))
    return env, env.default_params
