"""Per-sample losses of PPO-Clip and its KL forms, with their diagnostics.

Reference: Colletti & Holzinger, "KLip-PPO: A per-sample KL perspective on PPO-Clip",
arXiv 2606.23932 (2026).

Notation for a sample t: ``x = log_prob - old_log_prob`` (log-ratio), ``w = exp(x)``
(importance ratio), ``A`` the advantage, ``eps`` the clip radius. Every policy loss
takes ``log_prob, old_log_prob, advantage`` positionally (any equal shapes, e.g.
``[batch]`` or ``[batch, tokens]``), hyperparameters keyword-only (Python floats or
traced arrays, so sweeps can vmap over them), and returns the per-sample loss to
MINIMISE with the shape of its inputs. Reduce it yourself (mean, masked mean, token
weights). ``old_log_prob`` and ``advantage`` never carry gradient.

The central fact: all PPO forms share one template ``-(w*A + sg(beta_t) * x)`` and
differ only in the per-sample coefficient ``beta_t``. With the step gate
(``beta_t = -w*A`` on I_kill, 0 elsewhere) the gradient equals PPO-Clip's exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient

# A gate maps (distance, upper_side) to a weight in [0, 1]: ``distance`` is the signed
# distance past the harmful band edge in ratio units, ``upper_side`` is True where the
# harmful edge is 1+eps (A > 0) and False where it is 1-eps (A < 0).
GateFn = Callable[[jax.Array, jax.Array], jax.Array]
Gate = str | GateFn

GATES = ("step", "linear_ramp", "sigmoid")
SIGMOID_LOGIT_LIMIT = 60.0
ADVANTAGE_FLOOR = 1e-8


class Partition(NamedTuple):
    """Boolean membership of each sample in the paper's three sets.

    ``in_band``: ``1-eps <= w <= 1+eps``. ``kill``: past the edge the advantage pushes
    towards (clip zeroes the gradient). ``pass_through``: past the other edge (the
    gradient still flows). Out-of-band samples with ``A == 0`` are in none of them.
    """

    in_band: jax.Array
    kill: jax.Array
    pass_through: jax.Array


class PartitionFractions(NamedTuple):
    """Fraction of samples in each set of the partition (scalars)."""

    in_band: jax.Array
    kill: jax.Array
    pass_through: jax.Array


class BetaStats(NamedTuple):
    """Summary of the per-sample coefficients ``beta_t`` (scalars).

    ``kill_abs_mean`` is the mean of ``|beta_t|`` over I_kill (0 when I_kill is empty).
    """

    mean: jax.Array
    p50: jax.Array
    p90: jax.Array
    kill_abs_mean: jax.Array


def _check_same_shape(**arrays: jax.Array) -> None:
    shapes = {name: jnp.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{name}{list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"per-sample inputs must share one shape, got {detail}")


def _ratio_terms(log_prob, old_log_prob, advantage):
    """Returns (log_ratio, ratio, advantage) with gradient only through log_prob."""
    _check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob, advantage=advantage)
    log_ratio = log_prob - sg(old_log_prob)
    return log_ratio, jnp.exp(log_ratio), sg(advantage)


def ppo_clip(log_prob, old_log_prob, advantage, *, clip_eps):
    """PPO-Clip: ``-min(w*A, clip(w, 1-eps, 1+eps)*A)`` per sample.

    Schulman et al. (2017), eq. 7; loss 1 of Colletti & Holzinger (2026).

    Args:
      log_prob: ``[...]`` log-probabilities of the taken actions, current policy.
      old_log_prob: ``[...]`` log-probabilities under the rollout policy.
      advantage: ``[...]`` advantage estimates.
      clip_eps: clip radius ``eps`` in (0, 1), scalar or broadcastable array.

    Returns:
      ``[...]`` per-sample loss to minimise.

    The minimum is taken as a selection by the partition: the clipped branch on I_kill,
    the unclipped one elsewhere. That is the same value everywhere; at a ratio exactly
    on a band edge (where the branches tie) it fixes the gradient to the unclipped one,
    the convention of ``partition`` and ``klip``, instead of ``jnp.minimum``'s split
    of a tie, so the identity with ``klip`` holds bit for bit even there.
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    kill = partition(log_prob, old_log_prob, advantage, clip_eps=clip_eps).kill
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.where(kill, clipped * advantage, ratio * advantage)


def partition(log_prob, old_log_prob, advantage, *, clip_eps) -> Partition:
    """Splits samples into I_in, I_kill and I_pass (no gradient).

    Band edges use strict inequalities, so a ratio exactly on an edge is in band.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: clip radius.

    Returns:
      ``Partition`` of boolean ``[...]`` arrays.
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    ratio = sg(ratio)
    above = ratio > 1.0 + clip_eps
    below = ratio < 1.0 - clip_eps
    positive, negative = advantage > 0, advantage < 0
    return Partition(
        in_band=~(above | below),
        kill=(above & positive) | (below & negative),
        pass_through=(above & negative) | (below & positive),
    )


def boundary_distance(ratio, advantage, *, clip_eps):
    """Signed distance ``d`` past the harmful band edge, in ratio units.

    ``d = w - (1+eps)`` where ``A > 0`` and ``d = (1-eps) - w`` where ``A < 0``
    (``d > 0`` means the sample is in I_kill). Where ``A == 0`` the value is
    irrelevant: every gate is forced to 0 there.
    """
    upper = advantage > 0
    return jnp.where(upper, ratio - (1.0 + clip_eps), (1.0 - clip_eps) - ratio)


def step_gate(distance, upper_side):
    """1 strictly past the harmful edge, 0 elsewhere: PPO-Clip exactly."""
    del upper_side
    return (distance > 0).astype(distance.dtype)


def linear_ramp_gate(softness):
    """``clamp(d / s, 0, 1)``: rises linearly over ``s`` ratio units past the edge."""

    def gate(distance, upper_side):
        del upper_side
        return jnp.clip(distance / softness, 0.0, 1.0)

    return gate


def sigmoid_gate(softness):
    """``sigmoid(d / s)`` with the logit clamped to +-60 (no overflow, no NaN)."""

    def gate(distance, upper_side):
        del upper_side
        logit = jnp.clip(distance / softness, -SIGMOID_LOGIT_LIMIT, SIGMOID_LOGIT_LIMIT)
        return jax.nn.sigmoid(logit)

    return gate


def asymmetric_gate(upper: GateFn, lower: GateFn) -> GateFn:
    """Combines two gates: ``upper`` on the 1+eps edge (A > 0), ``lower`` on 1-eps.

    Example: a hard clip against over-reinforcing good actions and a soft one against
    over-suppressing bad ones::

        gate = asymmetric_gate(step_gate, sigmoid_gate(0.05))
        loss = klip(lp, old_lp, adv, clip_eps=0.2, gate=gate)
    """

    def gate(distance, upper_side):
        return jnp.where(
            upper_side, upper(distance, upper_side), lower(distance, upper_side)
        )

    return gate


def resolve_gate(gate: Gate, softness=None) -> GateFn:
    """Turns a gate name (``"step"``, ``"linear_ramp"``, ``"sigmoid"``) or callable
    into a gate function. Soft gates need ``softness`` (> 0)."""
    if callable(gate):
        return gate
    if gate == "step":
        return step_gate
    if gate not in GATES:
        raise ValueError(
            f"unknown gate {gate!r}; expected one of {GATES} or a callable"
        )
    if softness is None:
        raise ValueError(f"gate {gate!r} needs softness > 0")
    return (
        linear_ramp_gate(softness) if gate == "linear_ramp" else sigmoid_gate(softness)
    )


def gate_weight(
    log_prob, old_log_prob, advantage, *, clip_eps, gate="step", softness=None
):
    """The gate value ``g_t`` in [0, 1] per sample (no gradient); 0 where ``A == 0``."""
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    ratio = sg(ratio)
    gate_fn = resolve_gate(gate, softness)
    if gate_fn is step_gate:
        # The partition's comparisons, so the step gate is I_kill bit for bit.
        weight = partition(log_prob, old_log_prob, advantage, clip_eps=clip_eps).kill
        return weight.astype(ratio.dtype)
    distance = boundary_distance(ratio, advantage, clip_eps=clip_eps)
    weight = gate_fn(distance, advantage > 0)
    return sg(jnp.where(advantage == 0, 0.0, weight).astype(ratio.dtype))


def klip_beta(
    log_prob, old_log_prob, advantage, *, clip_eps, gate="step", softness=None
):
    """Per-sample KL coefficient ``beta_t = -w*A*g_t`` (no gradient).

    With the step gate ``g_t = 1[I_kill]``: ``beta_t = -w*A`` on I_kill, else 0
    (Colletti & Holzinger 2026, loss 2). ``beta_t`` has the sign of ``-A``; the
    penalty it sets on the sampled KL ``-x`` is ``beta_t * (-x) >= 0`` past the
    harmful edge, where ``x`` and ``A`` share their sign.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: clip radius.
      gate: ``"step"``, ``"linear_ramp"``, ``"sigmoid"`` or a ``GateFn``.
      softness: ``s > 0`` for the soft gates (``s -> 0`` recovers the step).

    Returns:
      ``[...]`` coefficients ``beta_t``.
    """
    _, ratio, advantage, weight = _gated_terms(
        log_prob, old_log_prob, advantage, clip_eps, gate, softness
    )
    return sg(-(ratio * advantage) * weight)


def _gated_terms(log_prob, old_log_prob, advantage, clip_eps, gate, softness):
    """(log_ratio, ratio, advantage, gate weight) shared by ``klip`` and ``klip_beta``."""
    log_ratio, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    weight = gate_weight(
        log_prob,
        old_log_prob,
        advantage,
        clip_eps=clip_eps,
        gate=gate,
        softness=softness,
    )
    return log_ratio, ratio, advantage, weight


def klip(log_prob, old_log_prob, advantage, *, clip_eps, gate="step", softness=None):
    """Per-sample KL form of PPO-Clip: ``-(w*A + sg(beta_t) * x)``.

    ``x = log_prob - old_log_prob`` is the sampled KL estimate's log-ratio and
    ``beta_t = klip_beta(...)``. With ``gate="step"`` the gradient equals
    ``ppo_clip``'s exactly (Colletti & Holzinger 2026, theorem 1); soft gates give the
    soft-clip family.

    The gradient w.r.t. ``x`` is ``-w*(A + beta_t/w) = -w*A*(1 - g_t)`` (the effective
    advantage form). It is evaluated in that form so that fully gated samples get a
    gradient of exactly 0 in float32 too, instead of ``w*A - w*A`` rounding residue;
    the returned value is ``-(w*A + beta_t*x)`` as written.

    Args:
      log_prob: ``[...]`` log-probabilities of the taken actions, current policy.
      old_log_prob: ``[...]`` log-probabilities under the rollout policy.
      advantage: ``[...]`` advantage estimates.
      clip_eps: clip radius ``eps``.
      gate: ``"step"``, ``"linear_ramp"``, ``"sigmoid"`` or a ``GateFn``.
      softness: ``s > 0`` for the soft gates.

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    log_ratio, ratio, advantage, weight = _gated_terms(
        log_prob, old_log_prob, advantage, clip_eps, gate, softness
    )
    beta = sg(-(ratio * advantage) * weight)
    effective_advantage = sg(advantage * (1.0 - weight))
    differentiable = ratio * effective_advantage
    value_rest = sg(ratio * advantage + beta * log_ratio - differentiable)
    return -(differentiable + value_rest)


def kl_penalty(log_prob, old_log_prob, advantage, kl, *, beta):
    """Scalar-beta PPO-KL: ``-w*A + beta*kl`` per sample.

    Losses 3 and 4 of Colletti & Holzinger (2026) (fixed or adaptive ``beta``).
    ``kl`` is a per-sample KL estimate supplied by the caller and keeps its gradient:
    ``sampled_kl``, ``k3_kl``, or an analytic KL such as ``categorical_kl``. With
    ``beta = 0`` this is the unclipped importance-sampled surrogate.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      kl: ``[...]`` per-sample KL estimates (differentiable w.r.t. the policy).
      beta: penalty coefficient, scalar or broadcastable array.

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    _check_same_shape(log_prob=log_prob, kl=kl)
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    return -(ratio * advantage) + beta * kl


def soft_min_clip(log_prob, old_log_prob, advantage, *, clip_eps, softness):
    """Soft-minimum PPO-Clip: ``-|A|' * softmin_s(w*A/|A|', clip(w)*A/|A|')``.

    ``|A|' = sg(max(|A|, 1e-8))`` and ``softmin_s(u, v) = -s*log(exp(-u/s) +
    exp(-v/s))``, the log-sum-exp soft minimum with temperature ``s``; ``s -> 0``
    recovers ``ppo_clip`` (the "soft_min" variant of Colletti & Holzinger 2026).

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: clip radius.
      softness: temperature ``s > 0``.

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    scale = sg(jnp.maximum(jnp.abs(advantage), ADVANTAGE_FLOOR))
    unclipped = ratio * advantage / scale
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage / scale
    branches = jnp.stack([-unclipped / softness, -clipped / softness])
    soft_min = -softness * jax.nn.logsumexp(branches, axis=0)
    return -scale * soft_min


def phi_penalty(log_prob, old_log_prob, advantage, *, clip_eps):
    """Weight-space penalty ``Phi`` with PPO-Clip's term ``= w*A - Phi`` (value identity).

    ``Phi = (w - (1+eps))*A`` if ``w > 1+eps, A > 0``; ``(w - (1-eps))*A`` if
    ``w < 1-eps, A < 0``; 0 otherwise. So ``ppo_clip == -(w*A - phi_penalty)``.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: clip radius.

    Returns:
      ``[...]`` per-sample ``Phi`` (differentiable through ``log_prob``).
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    above = (ratio > 1.0 + clip_eps) & (advantage > 0)
    below = (ratio < 1.0 - clip_eps) & (advantage < 0)
    edge = jnp.where(above, 1.0 + clip_eps, 1.0 - clip_eps)
    return jnp.where(above | below, (ratio - edge) * advantage, 0.0)


def clipped_value_loss(value, old_value, target, *, clip_eps):
    """PPO's clipped value loss ``0.5*max((v-R)^2, (v_old + clip(v-v_old, +-eps) - R)^2)``.

    Args:
      value: ``[...]`` current value predictions.
      old_value: ``[...]`` predictions at rollout time (no gradient).
      target: ``[...]`` return targets ``R`` (no gradient).
      clip_eps: value clip radius.

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    _check_same_shape(value=value, old_value=old_value, target=target)
    old_value, target = sg(old_value), sg(target)
    clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum((value - target) ** 2, (clipped - target) ** 2)


def sampled_kl(log_prob, old_log_prob):
    """Sampled KL(old || new) estimate ``old_log_prob - log_prob = -x`` per sample."""
    return sg(old_log_prob) - log_prob


def k3_kl(log_prob, old_log_prob):
    """Schulman's non-negative estimator ``k3 = (w - 1) - x`` per sample."""
    log_ratio = log_prob - sg(old_log_prob)
    return jnp.expm1(log_ratio) - log_ratio


def categorical_kl(old_logits, logits):
    """Analytic ``KL(pi_old || pi)`` of categorical distributions.

    Args:
      old_logits: ``[..., actions]`` rollout-policy logits (no gradient).
      logits: ``[..., actions]`` current logits.

    Returns:
      ``[...]`` per-sample KL.
    """
    old_log_p = jax.nn.log_softmax(sg(old_logits))
    log_p = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(old_log_p) * (old_log_p - log_p), axis=-1)


def gaussian_kl(old_mean, old_log_std, mean, log_std):
    """Analytic ``KL(pi_old || pi)`` of diagonal Gaussians, summed over action dims.

    Args:
      old_mean, old_log_std: ``[..., dims]`` rollout-policy parameters (no gradient).
      mean, log_std: ``[..., dims]`` current parameters.

    Returns:
      ``[...]`` per-sample KL.
    """
    old_mean, old_log_std = sg(old_mean), sg(old_log_std)
    variance_ratio = jnp.exp(2.0 * (old_log_std - log_std))
    mean_term = ((old_mean - mean) * jnp.exp(-log_std)) ** 2
    per_dim = 0.5 * (variance_ratio + mean_term - 1.0) + log_std - old_log_std
    return jnp.sum(per_dim, axis=-1)


def partition_fractions(log_prob, old_log_prob, advantage, *, clip_eps):
    """Mean membership of I_in, I_kill and I_pass over all samples."""
    return fractions_of(partition(log_prob, old_log_prob, advantage, clip_eps=clip_eps))


def fractions_of(parts: Partition) -> PartitionFractions:
    """``PartitionFractions`` of a precomputed ``Partition``."""
    return PartitionFractions(*(jnp.mean(p.astype(jnp.float32)) for p in parts))


def beta_stats(
    log_prob, old_log_prob, advantage, *, clip_eps, gate="step", softness=None
):
    """Mean, median, 90th percentile of ``beta_t`` and mean ``|beta_t|`` on I_kill."""
    beta = klip_beta(
        log_prob,
        old_log_prob,
        advantage,
        clip_eps=clip_eps,
        gate=gate,
        softness=softness,
    )
    kill = partition(log_prob, old_log_prob, advantage, clip_eps=clip_eps).kill
    return summarize_beta(beta, kill)


def summarize_beta(beta, kill) -> BetaStats:
    """``BetaStats`` of precomputed coefficients ``beta`` and an I_kill mask."""
    kill_count = jnp.sum(kill)
    kill_abs_sum = jnp.sum(jnp.where(kill, jnp.abs(beta), 0.0))
    return BetaStats(
        mean=jnp.mean(beta),
        p50=jnp.percentile(beta, 50.0),
        p90=jnp.percentile(beta, 90.0),
        kill_abs_mean=kill_abs_sum / jnp.maximum(kill_count, 1),
    )


def approx_kl(log_prob, old_log_prob):
    """Mean k3 estimate of ``KL(pi_old || pi)`` over all samples (no gradient)."""
    return sg(jnp.mean(k3_kl(log_prob, old_log_prob)))


def clip_fraction(log_prob, old_log_prob, *, clip_eps):
    """Fraction of samples whose ratio lies strictly outside ``[1-eps, 1+eps]``."""
    ratio = jnp.exp(sg(log_prob - old_log_prob))
    outside = (ratio > 1.0 + clip_eps) | (ratio < 1.0 - clip_eps)
    return jnp.mean(outside.astype(jnp.float32))


__all__ = [
    "GATES",
    "BetaStats",
    "Gate",
    "GateFn",
    "Partition",
    "PartitionFractions",
    "approx_kl",
    "asymmetric_gate",
    "beta_stats",
    "boundary_distance",
    "categorical_kl",
    "clip_fraction",
    "clipped_value_loss",
    "fractions_of",
    "gate_weight",
    "gaussian_kl",
    "k3_kl",
    "kl_penalty",
    "klip",
    "klip_beta",
    "linear_ramp_gate",
    "partition",
    "partition_fractions",
    "phi_penalty",
    "ppo_clip",
    "resolve_gate",
    "sampled_kl",
    "sigmoid_gate",
    "soft_min_clip",
    "step_gate",
    "summarize_beta",
]
