"""Per-sample losses of PPO-Clip and its KL forms, with their diagnostics.

Reference: Colletti & Holzinger, "KLip-PPO: A per-sample KL perspective on PPO-Clip",
arXiv 2606.23932 (2026).

Notation for a sample t: ``x = log_prob - old_log_prob`` (log-ratio), ``w = exp(x)``
(importance ratio), ``A`` the advantage, ``eps`` the clip radius. Every policy loss
takes ``log_prob, old_log_prob, advantage`` positionally (any equal shapes, e.g.
``[batch]`` or ``[batch, tokens]``), hyperparameters keyword-only (Python floats or
traced arrays, so sweeps can vmap over them), and returns the per-sample loss to
MINIMISE with the shape of its inputs. Reduce it yourself (mean, masked mean, token
weights; ``klipjax.token_losses.aggregate`` names the usual token-level reductions).
``old_log_prob`` and ``advantage`` never carry gradient.

The central fact: all PPO forms share one template ``-(w*A + sg(beta_t) * x)`` and
differ only in the per-sample coefficient ``beta_t``. With the step gate
(``beta_t = -w*A`` on I_kill, 0 elsewhere) the gradient equals PPO-Clip's exactly.

Options shared by the clipped forms, all off by default (the defaults reproduce the
symmetric PPO-Clip of the paper bit for bit):

- ``clip_eps_high``: the band is ``(1 - clip_eps, 1 + clip_eps_high)`` ("clip-higher");
  both radii may be arrays broadcastable to the inputs (per-token radii).
- ``dual_clip = c > 1``: for ``A < 0`` the objective is also floored at ``c*A``, i.e.
  samples with ``A < 0`` and ``w > c`` join I_kill (dual-clip PPO, Ye et al. 2020).
- ``mask`` on the statistics: only samples where the mask is true are counted.

``klip``'s ``gate=`` takes a name, a ``GateFn`` of the band distance, a ``SampleGate``
(which also sees ``w``, ``A`` and a per-sample ``context=`` such as the token position
or the policy age) or an array of precomputed weights; ``extra_beta=`` adds a
coefficient that is not a gate (a penalty on the log-ratio).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from klipjax.core import sorting

sg = jax.lax.stop_gradient

# A gate maps (distance, upper_side) to a weight in [0, 1]: ``distance`` is the signed
# distance past the harmful band edge in ratio units, ``upper_side`` is True where the
# harmful edge is 1+eps (A > 0) and False where it is 1-eps (A < 0).
GateFn = Callable[[jax.Array, jax.Array], jax.Array]

GATES = ("step", "linear_ramp", "sigmoid")
SIGMOID_LOGIT_LIMIT = 60.0
ADVANTAGE_FLOOR = 1e-8


class GateInputs(NamedTuple):
    """Everything a ``SampleGate`` may condition on, per sample (no gradient).

    ``ratio`` is ``w``, ``advantage`` is ``A``, ``distance`` and ``upper_side`` are what
    a ``GateFn`` receives, ``lower_edge = 1 - clip_eps`` and ``upper_edge = 1 +
    clip_eps_high`` are the band edges (broadcast to the sample shape), and
    ``context`` is whatever the caller passed as ``context=`` (a per-sample array
    such as the token position or the policy age, any pytree, or None).
    """

    ratio: jax.Array
    advantage: jax.Array
    distance: jax.Array
    upper_side: jax.Array
    lower_edge: jax.Array
    upper_edge: jax.Array
    context: Any


@dataclasses.dataclass(frozen=True)
class SampleGate:
    """A gate that sees every per-sample quantity: ``fn(GateInputs) -> g_t``.

    Use it (also as a decorator) for gates that are not functions of the band
    distance alone: shapes in ``w`` itself (``token_losses.sapo_gate``,
    ``token_losses.cispo_gate``) or gates conditioned on a per-token context::

        @SampleGate
        def age_gate(inputs):  # context: policy age of each token, in updates
            # the soft clip starts 0.05 earlier in ratio per update of age
            logit = (inputs.distance + 0.05 * inputs.context) / 0.05
            return jax.nn.sigmoid(jnp.clip(logit, -60.0, 60.0))

        loss = klip(lp, old_lp, adv, clip_eps=0.2, gate=age_gate, context=age)

    The weight may leave [0, 1]: ``g_t < 0`` amplifies a sample's gradient and
    ``g_t > 1`` reverses it (the effective advantage is ``A*(1 - g_t)``).
    """

    fn: Callable[[GateInputs], jax.Array]

    def __call__(self, inputs: GateInputs) -> jax.Array:
        return self.fn(inputs)


# What ``gate=`` accepts: a name in GATES, a GateFn, a SampleGate, or an array of
# precomputed weights.
Gate = str | GateFn | SampleGate | jax.Array


class Partition(NamedTuple):
    """Boolean membership of each sample in the paper's three sets.

    ``in_band``: ``1-eps <= w <= 1+eps``. ``kill``: past the edge the advantage pushes
    towards (clip zeroes the gradient). ``pass_through``: past the other edge (the
    gradient still flows). Out-of-band samples with ``A == 0`` are in none of them.
    With ``dual_clip = c``, samples with ``A < 0`` and ``w > c`` are in ``kill`` only.
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


def _check_broadcast(shape, **arrays) -> None:
    """Options that vary per sample must broadcast to the inputs without growing
    them: a larger result would silently change the loss's shape."""
    for name, array in arrays.items():
        if array is None:
            continue
        array_shape = jnp.shape(array)
        try:
            joint = jnp.broadcast_shapes(array_shape, shape)
        except ValueError:
            joint = None
        if joint != tuple(shape):
            raise ValueError(
                f"{name}{list(array_shape)} does not broadcast to the per-sample "
                f"shape {list(shape)}"
            )


def _upper_radius(clip_eps, clip_eps_high):
    return clip_eps if clip_eps_high is None else clip_eps_high


def _ratio_terms(log_prob, old_log_prob, advantage):
    """Returns (log_ratio, ratio, advantage) with gradient only through log_prob."""
    _check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob, advantage=advantage)
    log_ratio = log_prob - sg(old_log_prob)
    return log_ratio, jnp.exp(log_ratio), sg(advantage)


def _dual_region(ratio, advantage, dual_clip):
    """``A < 0`` and ``w > c``: where dual-clip floors the objective at ``c*A``."""
    return (advantage < 0) & (sg(ratio) > dual_clip)


def ppo_clip(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    clip_eps_high=None,
    dual_clip=None,
):
    """PPO-Clip: ``-min(w*A, clip(w, 1-eps, 1+eps_high)*A)`` per sample.

    Schulman et al. (2017), eq. 7; loss 1 of Colletti & Holzinger (2026). With
    ``dual_clip = c`` the objective for ``A < 0`` is ``max(min(w*A, clip(w)*A), c*A)``
    (Ye et al. 2020): a sample with ``A < 0`` and ``w > c`` contributes the constant
    ``-c*A`` and no gradient.

    Args:
      log_prob: ``[...]`` log-probabilities of the taken actions, current policy.
      old_log_prob: ``[...]`` log-probabilities under the rollout policy.
      advantage: ``[...]`` advantage estimates.
      clip_eps: lower clip radius ``eps`` in (0, 1), scalar or broadcastable array.
      clip_eps_high: upper radius ``eps_high`` (default ``clip_eps``), scalar or
        broadcastable array; DAPO's clip-higher uses 0.28 with ``clip_eps`` 0.2.
      dual_clip: ``c > 1`` for dual-clip PPO (verl uses 3), or None for none.

    Returns:
      ``[...]`` per-sample loss to minimise.

    The minimum is taken as a selection by the partition: the clipped branch on I_kill,
    the unclipped one elsewhere. That is the same value everywhere; at a ratio exactly
    on a band edge (where the branches tie) it fixes the gradient to the unclipped one,
    the convention of ``partition`` and ``klip``, instead of ``jnp.minimum``'s split
    of a tie, so the identity with ``klip`` holds bit for bit even there.
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    kill = partition(
        log_prob,
        old_log_prob,
        advantage,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
    ).kill
    upper = 1.0 + _upper_radius(clip_eps, clip_eps_high)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, upper)
    objective = jnp.where(kill, clipped * advantage, ratio * advantage)
    if dual_clip is not None:
        dual = _dual_region(ratio, advantage, dual_clip)
        objective = jnp.where(dual, dual_clip * advantage, objective)
    return -objective


def partition(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    clip_eps_high=None,
    dual_clip=None,
) -> Partition:
    """Splits samples into I_in, I_kill and I_pass (no gradient).

    Band edges use strict inequalities, so a ratio exactly on an edge is in band.
    With ``dual_clip = c``, ``A < 0`` and ``w > c`` moves a sample into I_kill (and
    out of the other two sets, so they stay disjoint).

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: lower clip radius.
      clip_eps_high: upper clip radius (default ``clip_eps``).
      dual_clip: dual-clip constant ``c > 1``, or None.

    Returns:
      ``Partition`` of boolean ``[...]`` arrays.
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    _check_broadcast(
        ratio.shape,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
    )
    ratio = sg(ratio)
    above = ratio > 1.0 + _upper_radius(clip_eps, clip_eps_high)
    below = ratio < 1.0 - clip_eps
    positive, negative = advantage > 0, advantage < 0
    in_band = ~(above | below)
    kill = (above & positive) | (below & negative)
    pass_through = (above & negative) | (below & positive)
    if dual_clip is not None:
        dual = _dual_region(ratio, advantage, dual_clip)
        in_band, kill, pass_through = in_band & ~dual, kill | dual, pass_through & ~dual
    return Partition(in_band=in_band, kill=kill, pass_through=pass_through)


def boundary_distance(ratio, advantage, *, clip_eps, clip_eps_high=None):
    """Signed distance ``d`` past the harmful band edge, in ratio units.

    ``d = w - (1+eps_high)`` where ``A > 0`` and ``d = (1-eps) - w`` where ``A < 0``
    (``d > 0`` means the sample is in I_kill). Where ``A == 0`` the value is
    irrelevant: every gate is forced to 0 there.
    """
    upper = advantage > 0
    upper_edge = 1.0 + _upper_radius(clip_eps, clip_eps_high)
    return jnp.where(upper, ratio - upper_edge, (1.0 - clip_eps) - ratio)


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


def _as_sample_gate(gate: GateFn | SampleGate) -> SampleGate:
    if isinstance(gate, SampleGate):
        return gate
    return SampleGate(lambda inputs: gate(inputs.distance, inputs.upper_side))


def asymmetric_gate(upper, lower):
    """Combines two gates: ``upper`` on the 1+eps edge (A > 0), ``lower`` on 1-eps.

    Example: a hard clip against over-reinforcing good actions and a soft one against
    over-suppressing bad ones::

        gate = asymmetric_gate(step_gate, sigmoid_gate(0.05))
        loss = klip(lp, old_lp, adv, clip_eps=0.2, gate=gate)

    Two ``GateFn`` give a ``GateFn``; if either is a ``SampleGate`` the result is a
    ``SampleGate``.
    """
    if isinstance(upper, SampleGate) or isinstance(lower, SampleGate):
        upper_gate, lower_gate = _as_sample_gate(upper), _as_sample_gate(lower)
        return SampleGate(
            lambda inputs: jnp.where(
                inputs.upper_side, upper_gate(inputs), lower_gate(inputs)
            )
        )

    def gate(distance, upper_side):
        return jnp.where(
            upper_side, upper(distance, upper_side), lower(distance, upper_side)
        )

    return gate


def resolve_gate(gate: Gate, softness=None) -> GateFn:
    """Turns a gate name (``"step"``, ``"linear_ramp"``, ``"sigmoid"``) or callable
    (a ``GateFn`` or ``SampleGate``, returned as it is) into a gate function. Soft
    gates need ``softness`` (> 0)."""
    if callable(gate):
        return gate
    if not isinstance(gate, str):
        raise TypeError(
            f"a gate is a name in {GATES} or a callable, got {type(gate).__name__} "
            "(precomputed weights go to gate= of gate_weight/klip directly)"
        )
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


def _is_weight_array(gate) -> bool:
    return not isinstance(gate, str) and not callable(gate)


def gate_weight(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    gate="step",
    softness=None,
    clip_eps_high=None,
    dual_clip=None,
    context=None,
):
    """The gate value ``g_t`` per sample (no gradient); 0 where ``A == 0``.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: lower clip radius.
      gate: ``"step"``, ``"linear_ramp"``, ``"sigmoid"``, a ``GateFn``, a
        ``SampleGate``, or an array of precomputed weights broadcastable to ``[...]``
        (e.g. a 0/1 entropy-quantile or staleness mask: 1 removes the sample's
        gradient, 0 keeps it).
      softness: ``s > 0`` for the soft gates named by string.
      clip_eps_high: upper clip radius (default ``clip_eps``).
      dual_clip: dual-clip constant ``c > 1``: ``g_t = 1`` where ``A < 0`` and
        ``w > c``, whatever the gate.
      context: any per-sample array or pytree passed on to a ``SampleGate`` as
        ``GateInputs.context`` (token position, policy age, ...); only a
        ``SampleGate`` may receive one.

    Returns:
      ``[...]`` weights ``g_t`` (in [0, 1] for the shipped band gates).
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    ratio = sg(ratio)
    _check_broadcast(
        ratio.shape,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
    )
    if context is not None and not isinstance(gate, SampleGate):
        shown = repr(gate) if isinstance(gate, str) else type(gate).__name__
        raise ValueError(
            f"context= reaches only a SampleGate, got gate {shown}; wrap the gate "
            "function in SampleGate to condition it on the context"
        )
    if _is_weight_array(gate):
        _check_broadcast(ratio.shape, gate=gate)
        weight = jnp.broadcast_to(jnp.asarray(gate), ratio.shape).astype(ratio.dtype)
    else:
        gate_fn = resolve_gate(gate, softness)
        if gate_fn is step_gate:
            # The partition's comparisons, so the step gate is I_kill bit for bit.
            weight = partition(
                log_prob,
                old_log_prob,
                advantage,
                clip_eps=clip_eps,
                clip_eps_high=clip_eps_high,
                dual_clip=dual_clip,
            ).kill
            return weight.astype(ratio.dtype)
        distance = boundary_distance(
            ratio, advantage, clip_eps=clip_eps, clip_eps_high=clip_eps_high
        )
        if isinstance(gate_fn, SampleGate):
            upper_edge = 1.0 + _upper_radius(clip_eps, clip_eps_high)
            inputs = GateInputs(
                ratio=ratio,
                advantage=advantage,
                distance=distance,
                upper_side=advantage > 0,
                lower_edge=jnp.broadcast_to(1.0 - clip_eps, ratio.shape),
                upper_edge=jnp.broadcast_to(upper_edge, ratio.shape),
                context=jax.tree.map(sg, context),
            )
            weight = gate_fn(inputs)
        else:
            weight = gate_fn(distance, advantage > 0)
    weight = jnp.where(advantage == 0, 0.0, weight)
    if dual_clip is not None:
        weight = jnp.where(_dual_region(ratio, advantage, dual_clip), 1.0, weight)
    return sg(weight.astype(ratio.dtype))


def klip_beta(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    gate="step",
    softness=None,
    clip_eps_high=None,
    dual_clip=None,
    context=None,
    extra_beta=None,
):
    """Per-sample KL coefficient ``beta_t = -w*A*g_t + extra_beta`` (no gradient).

    With the step gate ``g_t = 1[I_kill]``: ``beta_t = -w*A`` on I_kill, else 0
    (Colletti & Holzinger 2026, loss 2). ``beta_t`` has the sign of ``-A``; the
    penalty it sets on the sampled KL ``-x`` is ``beta_t * (-x) >= 0`` past the
    harmful edge, where ``x`` and ``A`` share their sign.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: lower clip radius.
      gate: ``"step"``, ``"linear_ramp"``, ``"sigmoid"``, a ``GateFn``, a
        ``SampleGate`` or precomputed weights (see ``gate_weight``).
      softness: ``s > 0`` for the soft gates (``s -> 0`` recovers the step).
      clip_eps_high: upper clip radius (default ``clip_eps``).
      dual_clip: dual-clip constant ``c > 1``, or None.
      context: per-sample context for a ``SampleGate``.
      extra_beta: ``[...]`` additive coefficient not tied to a gate (see ``klip``).

    Returns:
      ``[...]`` coefficients ``beta_t``.
    """
    _, ratio, advantage, weight = _gated_terms(
        log_prob,
        old_log_prob,
        advantage,
        clip_eps=clip_eps,
        gate=gate,
        softness=softness,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
        context=context,
    )
    beta = -(ratio * advantage) * weight
    if extra_beta is not None:
        beta = beta + _extra_beta(extra_beta, ratio.shape)
    return sg(beta)


def _gated_terms(log_prob, old_log_prob, advantage, **gate_options):
    """(log_ratio, ratio, advantage, gate weight) shared by ``klip`` and ``klip_beta``."""
    log_ratio, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    weight = gate_weight(log_prob, old_log_prob, advantage, **gate_options)
    return log_ratio, ratio, advantage, weight


def _extra_beta(extra_beta, shape):
    _check_broadcast(shape, extra_beta=extra_beta)
    return sg(jnp.broadcast_to(extra_beta, shape))


def klip(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    gate="step",
    softness=None,
    clip_eps_high=None,
    dual_clip=None,
    context=None,
    extra_beta=None,
):
    """Per-sample KL form of PPO-Clip: ``-(w*A + sg(beta_t) * x)``.

    ``x = log_prob - old_log_prob`` is the sampled KL estimate's log-ratio and
    ``beta_t = klip_beta(...) = -w*A*g_t + extra_beta``. With ``gate="step"`` the
    gradient equals ``ppo_clip``'s exactly (Colletti & Holzinger 2026, theorem 1),
    with the same ``clip_eps_high`` and ``dual_clip``; soft gates give the soft-clip
    family.

    ``extra_beta`` adds a coefficient that is not a gate: a per-token penalty
    ``P(x)`` enters the gradient as ``extra_beta = -P'(x)`` (KL-Cov's
    ``kappa*|x|`` on selected tokens: ``-kappa*sign(x)`` there;
    ``token_losses.penalty_beta`` builds it from ``P``).

    The gradient w.r.t. ``x`` is ``-w*(A + beta_t/w) = -w*A*(1 - g_t) - extra_beta``
    (the effective advantage form). It is evaluated in that form so that fully gated
    samples get a gradient of exactly 0 in float32 too, instead of ``w*A - w*A``
    rounding residue; the returned value is ``-(w*A + beta_t*x)`` as written.

    Args:
      log_prob: ``[...]`` log-probabilities of the taken actions, current policy.
      old_log_prob: ``[...]`` log-probabilities under the rollout policy.
      advantage: ``[...]`` advantage estimates.
      clip_eps: lower clip radius ``eps``.
      gate: ``"step"``, ``"linear_ramp"``, ``"sigmoid"``, a ``GateFn``, a
        ``SampleGate`` or precomputed weights (see ``gate_weight``).
      softness: ``s > 0`` for the soft gates.
      clip_eps_high: upper clip radius (default ``clip_eps``).
      dual_clip: dual-clip constant ``c > 1``, or None.
      context: per-sample context for a ``SampleGate`` (position, policy age, ...).
      extra_beta: ``[...]`` additive coefficient (no gradient), or None.

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    log_ratio, ratio, advantage, weight = _gated_terms(
        log_prob,
        old_log_prob,
        advantage,
        clip_eps=clip_eps,
        gate=gate,
        softness=softness,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
        context=context,
    )
    beta = sg(-(ratio * advantage) * weight)
    effective_advantage = sg(advantage * (1.0 - weight))
    differentiable = ratio * effective_advantage
    value_rest = sg(ratio * advantage + beta * log_ratio - differentiable)
    loss = -(differentiable + value_rest)
    if extra_beta is not None:
        loss = loss - _extra_beta(extra_beta, ratio.shape) * log_ratio
    return loss


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


def soft_min_clip(
    log_prob, old_log_prob, advantage, *, clip_eps, softness, clip_eps_high=None
):
    """Soft-minimum PPO-Clip: ``-|A|' * softmin_s(w*A/|A|', clip(w)*A/|A|')``.

    ``|A|' = sg(max(|A|, 1e-8))`` and ``softmin_s(u, v) = -s*log(exp(-u/s) +
    exp(-v/s))``, the log-sum-exp soft minimum with temperature ``s``; ``s -> 0``
    recovers ``ppo_clip`` (the "soft_min" variant of Colletti & Holzinger 2026).
    Where ``A == 0`` the value is exactly 0, as both branches are (the floor only
    guards the division).

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: lower clip radius.
      softness: temperature ``s > 0``.
      clip_eps_high: upper clip radius (default ``clip_eps``).

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    _check_broadcast(ratio.shape, clip_eps=clip_eps, clip_eps_high=clip_eps_high)
    scale = sg(jnp.maximum(jnp.abs(advantage), ADVANTAGE_FLOOR))
    unclipped = ratio * advantage / scale
    upper = 1.0 + _upper_radius(clip_eps, clip_eps_high)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, upper) * advantage / scale
    branches = jnp.stack([-unclipped / softness, -clipped / softness])
    soft_min = -softness * jax.nn.logsumexp(branches, axis=0)
    # Both branches are 0 at A == 0, but their soft minimum is -s*log 2, which the
    # floored scale would turn into a spurious 1e-8*s*log 2.
    return jnp.where(advantage == 0, 0.0, -scale * soft_min)


def phi_penalty(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    clip_eps_high=None,
    dual_clip=None,
):
    """Weight-space penalty ``Phi`` with PPO-Clip's term ``= w*A - Phi`` (value identity).

    ``Phi = (w - (1+eps_high))*A`` if ``w > 1+eps_high, A > 0``; ``(w - (1-eps))*A``
    if ``w < 1-eps, A < 0``; with ``dual_clip = c``, ``(w - c)*A`` if ``w > c, A < 0``;
    0 otherwise. So ``ppo_clip == -(w*A - phi_penalty)`` with the same options.

    Args:
      log_prob, old_log_prob, advantage: ``[...]`` per-sample arrays.
      clip_eps: lower clip radius.
      clip_eps_high: upper clip radius (default ``clip_eps``).
      dual_clip: dual-clip constant ``c > 1``, or None.

    Returns:
      ``[...]`` per-sample ``Phi`` (differentiable through ``log_prob``).
    """
    _, ratio, advantage = _ratio_terms(log_prob, old_log_prob, advantage)
    _check_broadcast(
        ratio.shape,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
    )
    upper = 1.0 + _upper_radius(clip_eps, clip_eps_high)
    above = (ratio > upper) & (advantage > 0)
    below = (ratio < 1.0 - clip_eps) & (advantage < 0)
    edge = jnp.where(above, upper, 1.0 - clip_eps)
    phi = jnp.where(above | below, (ratio - edge) * advantage, 0.0)
    if dual_clip is not None:
        dual = _dual_region(ratio, advantage, dual_clip)
        phi = jnp.where(dual, (ratio - dual_clip) * advantage, phi)
    return phi


def clipped_value_loss(value, old_value, target, *, clip_eps, clip_eps_high=None):
    """PPO's clipped value loss ``0.5*max((v-R)^2, (v_old + clip(v-v_old, +-eps) - R)^2)``.

    Args:
      value: ``[...]`` current value predictions.
      old_value: ``[...]`` predictions at rollout time (no gradient).
      target: ``[...]`` return targets ``R`` (no gradient).
      clip_eps: value clip radius; the band is ``(v_old - eps, v_old + eps_high)``.
      clip_eps_high: upper value clip radius (default ``clip_eps``).

    Returns:
      ``[...]`` per-sample loss to minimise.
    """
    _check_same_shape(value=value, old_value=old_value, target=target)
    old_value, target = sg(old_value), sg(target)
    upper = _upper_radius(clip_eps, clip_eps_high)
    clipped = old_value + jnp.clip(value - old_value, -clip_eps, upper)
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


def _valid(mask, shape):
    """The mask as booleans of the samples' shape (all true when None)."""
    if mask is None:
        return jnp.ones(shape, bool)
    _check_broadcast(shape, mask=mask)
    return jnp.broadcast_to(jnp.asarray(mask, bool), shape)


def _masked_mean(values, valid):
    """Mean over the valid samples; 0 when there are none (never NaN)."""
    total = jnp.sum(jnp.where(valid, values, 0))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(total.dtype)


def _masked_percentiles(values, valid, qs):
    """``jnp.percentile``'s linear interpolation over the valid samples only, for
    each ``q`` in ``qs``, from one sort."""
    values = values.reshape(-1)
    valid = valid.reshape(-1)
    count = jnp.sum(valid)
    # Invalid samples sort after every valid one and are never interpolated with.
    ordered = sorting.sort_floats(jnp.where(valid, values, jnp.finfo(values.dtype).max))
    results = []
    for q in qs:
        position = (q / 100.0) * jnp.maximum(count - 1, 0).astype(values.dtype)
        below = jnp.floor(position).astype(jnp.int32)
        above = jnp.minimum(below + 1, jnp.maximum(count - 1, 0))
        low, high = ordered[below], ordered[above]
        result = low + (position - below) * (high - low)
        results.append(jnp.where(count > 0, result, 0.0).astype(values.dtype))
    return tuple(results)


def partition_fractions(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    clip_eps_high=None,
    dual_clip=None,
    mask=None,
):
    """Mean membership of I_in, I_kill and I_pass over the samples (where ``mask``)."""
    parts = partition(
        log_prob,
        old_log_prob,
        advantage,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
    )
    return fractions_of(parts, mask=mask)


def fractions_of(parts: Partition, *, mask=None) -> PartitionFractions:
    """``PartitionFractions`` of a precomputed ``Partition`` (over ``mask`` if given;
    all 0 when the mask is empty)."""
    if mask is None:
        return PartitionFractions(*(jnp.mean(p.astype(jnp.float32)) for p in parts))
    valid = _valid(mask, parts.kill.shape)
    return PartitionFractions(
        *(_masked_mean(p.astype(jnp.float32), valid) for p in parts)
    )


def beta_stats(
    log_prob,
    old_log_prob,
    advantage,
    *,
    clip_eps,
    gate="step",
    softness=None,
    clip_eps_high=None,
    dual_clip=None,
    context=None,
    extra_beta=None,
    mask=None,
):
    """Mean, median, 90th percentile of ``beta_t`` and mean ``|beta_t|`` on I_kill.

    Takes ``klip``'s options; with ``mask`` only the valid samples are counted.
    """
    options = {
        "clip_eps": clip_eps,
        "clip_eps_high": clip_eps_high,
        "dual_clip": dual_clip,
    }
    beta = klip_beta(
        log_prob,
        old_log_prob,
        advantage,
        gate=gate,
        softness=softness,
        context=context,
        extra_beta=extra_beta,
        **options,
    )
    kill = partition(log_prob, old_log_prob, advantage, **options).kill
    return summarize_beta(beta, kill, mask=mask)


def summarize_beta(beta, kill, *, mask=None) -> BetaStats:
    """``BetaStats`` of precomputed coefficients ``beta`` and an I_kill mask, over
    the samples where ``mask`` is true if given (all 0 when it is empty)."""
    if mask is None:
        kill_count = jnp.sum(kill)
        kill_abs_sum = jnp.sum(jnp.where(kill, jnp.abs(beta), 0.0))
        p50, p90 = sorting.percentiles(beta, (50.0, 90.0))
        return BetaStats(
            mean=jnp.mean(beta),
            p50=p50,
            p90=p90,
            kill_abs_mean=kill_abs_sum / jnp.maximum(kill_count, 1),
        )
    valid = _valid(mask, jnp.shape(beta))
    p50, p90 = _masked_percentiles(beta, valid, (50.0, 90.0))
    return BetaStats(
        mean=_masked_mean(beta, valid),
        p50=p50,
        p90=p90,
        kill_abs_mean=_masked_mean(jnp.abs(beta), valid & kill),
    )


def approx_kl(log_prob, old_log_prob, *, mask=None):
    """Mean k3 estimate of ``KL(pi_old || pi)`` over the samples (where ``mask``; no
    gradient)."""
    k3 = k3_kl(log_prob, old_log_prob)
    if mask is None:
        return sg(jnp.mean(k3))
    return sg(_masked_mean(k3, _valid(mask, k3.shape)))


def clip_fraction(log_prob, old_log_prob, *, clip_eps, clip_eps_high=None, mask=None):
    """Fraction of samples whose ratio lies strictly outside ``[1-eps, 1+eps_high]``
    (over the samples where ``mask`` is true if given)."""
    ratio = jnp.exp(sg(log_prob - old_log_prob))
    _check_broadcast(ratio.shape, clip_eps=clip_eps, clip_eps_high=clip_eps_high)
    upper = 1.0 + _upper_radius(clip_eps, clip_eps_high)
    outside = ((ratio > upper) | (ratio < 1.0 - clip_eps)).astype(jnp.float32)
    if mask is None:
        return jnp.mean(outside)
    return _masked_mean(outside, _valid(mask, ratio.shape))


__all__ = [
    "GATES",
    "BetaStats",
    "Gate",
    "GateFn",
    "GateInputs",
    "Partition",
    "PartitionFractions",
    "SampleGate",
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
