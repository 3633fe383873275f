"""The loss variants a run can train with: one row each.

A variant is a name (what configs and the run table use), the policy loss it
minimises per sample, and the facts the engine needs about it: the gate whose
``beta_t`` its statistics report, whether it penalises a KL estimate, whether its
scalar beta adapts once per rollout, and whether it reads ``softness``.
Adding a variant is adding a row to ``VARIANTS``; its position is its traced id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from klipjax import losses


class LossInputs(NamedTuple):
    """What a variant's policy loss may read, per sample (``[batch]`` arrays) or per
    run (scalars): the run's hyperparameters and the current scalar beta."""

    log_prob: Any
    old_log_prob: Any
    advantage: Any
    kl: Any  # the run's KL estimate per sample (zeros if no variant uses one)
    clip_eps: Any
    softness: Any
    beta: Any


class Variant(NamedTuple):
    name: str
    policy_loss: Callable[[LossInputs], Any]  # per-sample loss to minimise
    gate: str = "step"  # the gate of the beta_t statistics
    uses_kl: bool = False
    adapts_beta: bool = False
    soft: bool = False  # reads softness (always > 0: its range excludes 0)


def _data(x: LossInputs):
    return x.log_prob, x.old_log_prob, x.advantage


VARIANTS: tuple[Variant, ...] = (
    Variant("ppo_clip", lambda x: losses.ppo_clip(*_data(x), clip_eps=x.clip_eps)),
    Variant("klip", lambda x: losses.klip(*_data(x), clip_eps=x.clip_eps)),
    Variant(
        "klip_linear_ramp",
        lambda x: losses.klip(
            *_data(x), clip_eps=x.clip_eps, gate="linear_ramp", softness=x.softness
        ),
        gate="linear_ramp",
        soft=True,
    ),
    Variant(
        "klip_sigmoid",
        lambda x: losses.klip(
            *_data(x), clip_eps=x.clip_eps, gate="sigmoid", softness=x.softness
        ),
        gate="sigmoid",
        soft=True,
    ),
    Variant(
        "soft_min",
        lambda x: losses.soft_min_clip(
            *_data(x), clip_eps=x.clip_eps, softness=x.softness
        ),
        soft=True,
    ),
    Variant(
        "kl_fixed",
        lambda x: losses.kl_penalty(*_data(x), x.kl, beta=x.beta),
        uses_kl=True,
    ),
    Variant(
        "kl_adaptive",
        lambda x: losses.kl_penalty(*_data(x), x.kl, beta=x.beta),
        uses_kl=True,
        adapts_beta=True,
    ),
    Variant("unclipped", lambda x: losses.kl_penalty(*_data(x), x.kl, beta=0.0)),
)
LOSSES: tuple[str, ...] = tuple(v.name for v in VARIANTS)
BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}
KL_ESTIMATORS: tuple[str, ...] = ("analytic", "sample", "k3")
