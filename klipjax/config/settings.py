"""What one sweep is: static ``Config`` (shared by every run) and traced ``HParams``.

A sweep is one compiled program. ``Config`` holds everything that sets a shape, a
scan length or a Python branch. ``HParams`` holds everything a user may sweep (the
loss variant included, as an integer id): stacked to ``[runs]`` it is the sweep's
run table, traced, so a whole grid shares one compile. Both default to the paper's
CartPole-v1 recipe.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from klipjax.config import checks
from klipjax.config.checks import ConfigError
from klipjax.core.variants import BY_NAME, KL_ESTIMATORS, LOSSES


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings that fix the compiled program: shared by every run of a sweep.

    Every field defaults to the paper's CartPole-v1 recipe. Invalid values raise
    ``ConfigError`` on construction.

    Attributes:
        env: A gymnax id, a ``register``ed id or ``brax/<task>[@backend]``.
        total_steps: Environment steps per run (rounded down to whole updates).
        num_envs: Parallel environments per run.
        num_steps: Steps per environment per rollout.
        epochs: Passes over each rollout.
        minibatch_size: Samples per gradient step; divides ``num_envs*num_steps``.
        hidden_sizes: Hidden layer widths of the actor and of the critic MLPs.
        identity_check: Record ``max |grad PPO-Clip - grad KLip|`` per update.
        eval_every: Updates between evaluations of every run's policy (0: only the
            final one); a multiple of the chunk size, so evaluations fall between
            compiled chunks.
        eval_episodes: Episodes per periodic evaluation, in each mode.
        final_eval_episodes: Episodes of the evaluation after the last update, in
            each mode (0: none).
    """

    env: str = "CartPole-v1"
    total_steps: int = 100_000
    num_envs: int = 4
    num_steps: int = 128
    epochs: int = 10
    minibatch_size: int = 64
    hidden_sizes: tuple[int, ...] = (64, 64)
    identity_check: bool = False
    eval_every: int = 0
    eval_episodes: int = 10
    final_eval_episodes: int = 100

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the checked values in place
        for key in STATIC_KEYS:
            value = getattr(self, key)
            if isinstance(value, (list, tuple)) and key != "hidden_sizes":
                raise ConfigError(
                    f"{key}={value!r}: {key} sets the program's shapes and cannot "
                    "be a grid axis; run one sweep per value"
                )
        set_(self, "env", _checked_env(self.env))
        for key in ("total_steps", "num_envs", "num_steps", "epochs", "minibatch_size"):
            set_(self, key, checks.as_int(key, getattr(self, key)))
        for key in ("eval_every", "final_eval_episodes"):
            set_(self, key, checks.as_int(key, getattr(self, key), 0))
        set_(self, "eval_episodes", checks.as_int("eval_episodes", self.eval_episodes))
        sizes = self.hidden_sizes
        sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
        set_(
            self, "hidden_sizes", tuple(checks.as_int("hidden_sizes", v) for v in sizes)
        )
        set_(
            self,
            "identity_check",
            checks.as_bool("identity_check", self.identity_check),
        )
        if self.batch_size % self.minibatch_size:
            raise ConfigError(
                f"minibatch_size={self.minibatch_size}: must divide "
                f"num_envs*num_steps={self.batch_size}"
            )
        if self.total_steps < self.batch_size:
            raise ConfigError(
                f"total_steps={self.total_steps}: smaller than one rollout "
                f"(num_envs*num_steps={self.batch_size})"
            )

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_minibatches(self) -> int:
        return self.batch_size // self.minibatch_size

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.batch_size

    @property
    def env_steps(self) -> int:
        """Environment steps each run really takes (whole updates)."""
        return self.num_updates * self.batch_size


def _checked_env(env: Any) -> str:
    from klipjax.envs import registered_ids  # deferred: importing gymnax costs a second

    known = registered_ids()
    if not isinstance(env, str) or env not in known:
        raise ConfigError(
            f"env={env!r}: not a registered gymnax environment{checks.suggest(env, known)}"
        )
    return env


STATIC_KEYS = tuple(f.name for f in dataclasses.fields(Config))


class HParams(NamedTuple):
    """Traced hyperparameters of one run, or of every run stacked to ``[runs]``.

    Stacked, this is a sweep's run table: one entry per run in every field (int32
    for ``seed`` and the two ids, float32 otherwise, switches as 0/1). Build it with
    ``klipjax.hparams`` (one run), ``klipjax.grid`` or ``klipjax.sample``, which take
    names (``loss="klip"``) and check every value. The defaults are the paper's.
    """

    seed: Any = 0
    loss_id: Any = LOSSES.index("ppo_clip")  # index into klipjax.core.variants.LOSSES
    kl_estimator_id: Any = KL_ESTIMATORS.index("analytic")  # into KL_ESTIMATORS
    lr: Any = 3e-4
    anneal_lr: Any = 1.0  # linear decay of lr to 0 over the run
    clip_eps: Any = 0.2
    beta: Any = 1.0  # (initial) scalar KL coefficient of kl_fixed / kl_adaptive
    kl_target: Any = 0.02  # kl_adaptive's target
    softness: Any = 0.05  # the soft gates' scale
    gamma: Any = 0.99
    gae_lambda: Any = 0.95
    ent_coef: Any = 0.0
    vf_coef: Any = 0.5
    max_grad_norm: Any = 0.5
    value_clip_eps: Any = 0.2
    normalize_obs: Any = 0.0
    normalize_reward: Any = 0.0


INT_FIELDS = ("seed", "loss_id", "kl_estimator_id")
# The names users give: ``loss`` and ``kl_estimator`` stand for the two id fields.
TRACED_KEYS = ("loss", "kl_estimator") + HParams._fields[3:]
FIELD_OF = {"loss": "loss_id", "kl_estimator": "kl_estimator_id"}
NAMES_OF = {"loss_id": LOSSES, "kl_estimator_id": KL_ESTIMATORS}


def default_value(key: str) -> Any:
    """The default of a traced key as a user writes it (names, bools, floats)."""
    field = FIELD_OF.get(key, key)
    value = HParams._field_defaults[field]
    if field in NAMES_OF:
        return NAMES_OF[field][value]
    if key in checks.BOOL_KEYS:
        return bool(value)
    return value


@dataclasses.dataclass(frozen=True)
class CodePaths:
    """The code paths a sweep's runs take; the program is compiled with these alone.

    A choice every run shares becomes a compile-time constant, so a single-variant
    sweep carries no branch for the other variants and a sweep without normalisation
    no normaliser updates. The defaults keep every path (each chosen at run time).
    """

    losses: tuple[str, ...] = LOSSES
    kl_estimators: tuple[str, ...] = KL_ESTIMATORS
    normalize_obs: tuple[bool, ...] = (False, True)
    normalize_reward: tuple[bool, ...] = (False, True)

    @property
    def needs_kl(self) -> bool:
        """Whether any run's loss penalises a KL estimate."""
        return any(BY_NAME[loss].uses_kl for loss in self.losses)

    def covers(self, other: CodePaths) -> bool:
        """Whether every path of ``other`` is compiled here."""
        return all(
            set(getattr(other, f.name)) <= set(getattr(self, f.name))
            for f in dataclasses.fields(self)
        )


__all__ = ["CodePaths", "Config", "ConfigError", "HParams"]
