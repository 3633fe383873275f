"""Token-level pieces around the KLip template: aggregation, sequence ratios, gates.

``klipjax.losses`` gives per-token losses of shape ``[batch, tokens]``; this module
adds what sequence-model users need around them, as pure functions:

- ``aggregate``: the usual reductions of a masked ``[batch, tokens]`` loss, each with
  its formula (the libraries' names for them collide; the docstring maps them).
- ``sequence_ratio_log_prob``: per-token log-probs whose ratio is the sequence-level
  (length-normalised) ratio, so ``ppo_clip``/``klip`` on them are GSPO-token.
- ``sapo_gate`` and ``cispo_gate``: soft gates in the ratio itself, for ``klip``.
- ``penalty_beta``, ``token_covariance``, ``top_fraction_mask``: additive penalty
  coefficients (``klip(..., extra_beta=)``) and the batch-coupled token selections
  they are applied to (KL-Cov), or that feed ``gate=`` as an array.

Every ``[batch, tokens]`` function takes a boolean ``mask`` (true on real tokens);
padded positions must still hold finite numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from klipjax.losses import GateInputs, SampleGate

sg = jax.lax.stop_gradient

AGGREGATIONS = (
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
    "token_sum",
)


def _token_mask(loss, mask, name="loss"):
    """Checks ``[batch, tokens]`` inputs and returns the mask as booleans."""
    if jnp.ndim(loss) != 2:
        raise ValueError(
            f"{name} must be [batch, tokens], got shape {list(jnp.shape(loss))}"
        )
    if mask is None:
        return jnp.ones(jnp.shape(loss), bool)
    if jnp.shape(mask) != jnp.shape(loss):
        raise ValueError(
            f"mask{list(jnp.shape(mask))} must have the shape of "
            f"{name}{list(jnp.shape(loss))}"
        )
    return jnp.asarray(mask, bool)


def aggregate(loss, mask, *, mode, horizon=None):
    """Reduces a per-token loss ``l[b, t]`` with mask ``m[b, t]`` to a scalar.

    With ``n_b = sum_t m[b, t]`` (the length of sequence b), ``B`` rows and ``B' =
    #{b : n_b > 0}`` non-empty sequences:

    - ``"token_mean"``: ``sum(l*m) / sum(m)``. Every token weighs the same (DAPO's
      token-level loss). verl/tunix ``"token-mean"``, SkyRL ``"token_mean"``, TRL
      ``loss_type="bnpo"`` (TRL ``"dapo"`` divides by the token count of the whole
      accumulated batch instead of this micro-batch).
    - ``"seq_mean_token_mean"``: ``(1/B') sum_b sum_t(l*m) / n_b``. Every sequence
      weighs the same (the GRPO paper's ``1/G sum_i 1/|o_i|``; GSPO and SAPO use it).
      verl ``"seq-mean-token-mean"``, tunix ``"sequence-mean-token-mean"``, SkyRL
      ``"sequence_mean"``, TRL ``loss_type="grpo"`` (TRL divides by ``B``: its empty
      rows count as zeros).
    - ``"seq_mean_token_sum"``: ``(1/B') sum_b sum_t(l*m)``. verl
      ``"seq-mean-token-sum"``, tunix ``"seq-mean-token-sum"``.
    - ``"seq_mean_token_sum_norm"``: ``sum(l*m) / (B * horizon)`` with a constant
      ``horizon`` (default: ``tokens``, the padded length), so no length bias (Dr.
      GRPO). SkyRL ``"seq_mean_token_sum_norm"``, TRL ``loss_type="dr_grpo"``. Not
      verl's mode of the same name, which divides by ``horizon`` only (``B`` times
      larger), nor tunix's ``"sequence-mean-token-sum-norm"`` (by default
      ``sum(l*m) / B``: ``seq_mean_token_sum`` when no row is empty).
    - ``"token_sum"``: ``sum(l*m)``, for callers who normalise across devices or
      micro-batches themselves.

    Sequences with no valid token are left out of ``B'`` and contribute 0, so an
    empty sequence (or an empty batch) never gives NaN. (The other libraries differ
    among themselves on empty rows; the names above match on non-empty ones.)

    Args:
      loss: ``[batch, tokens]`` per-token loss (e.g. ``losses.klip``'s output).
      mask: ``[batch, tokens]`` booleans, true on tokens that count; None for all.
      mode: one of ``AGGREGATIONS``.
      horizon: the constant length of ``"seq_mean_token_sum_norm"`` (e.g. the
        maximum generation length); only that mode takes it.

    Returns:
      Scalar loss.
    """
    valid = _token_mask(loss, mask)
    if mode not in AGGREGATIONS:
        raise ValueError(
            f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}"
        )
    if horizon is not None and mode != "seq_mean_token_sum_norm":
        raise ValueError(f"horizon applies to 'seq_mean_token_sum_norm', not {mode!r}")
    # where, not l*m: a non-finite loss on a padded token must not leak as NaN.
    masked = jnp.where(valid, loss, 0.0)
    if mode == "token_sum":
        return jnp.sum(masked)
    if mode == "token_mean":
        return jnp.sum(masked) / jnp.maximum(jnp.sum(valid), 1).astype(masked.dtype)
    if mode == "seq_mean_token_sum_norm":
        batch, tokens = loss.shape
        return jnp.sum(masked) / (batch * (tokens if horizon is None else horizon))
    lengths = jnp.sum(valid, axis=-1)
    per_sequence = jnp.sum(masked, axis=-1)
    if mode == "seq_mean_token_mean":
        per_sequence = per_sequence / jnp.maximum(lengths, 1).astype(masked.dtype)
    non_empty = jnp.maximum(jnp.sum(lengths > 0), 1).astype(masked.dtype)
    return jnp.sum(per_sequence) / non_empty


def sequence_log_ratio(log_prob, old_log_prob, mask):
    """Length-normalised sequence log-ratio ``(1/n_b) sum_t m[b,t] * x[b,t]``.

    ``exp`` of it is GSPO's sequence ratio ``s_b = (pi(y_b)/pi_old(y_b))^(1/|y_b|)``
    (Zheng et al. 2025). Differentiable through ``log_prob``; 0 for an empty sequence.

    Args:
      log_prob: ``[batch, tokens]`` current log-probabilities.
      old_log_prob: ``[batch, tokens]`` rollout log-probabilities (no gradient).
      mask: ``[batch, tokens]`` booleans, true on real tokens.

    Returns:
      ``[batch]`` mean log-ratio per sequence.
    """
    valid = _token_mask(log_prob, mask, "log_prob")
    if jnp.shape(old_log_prob) != jnp.shape(log_prob):
        raise ValueError(
            f"old_log_prob{list(jnp.shape(old_log_prob))} must have the shape of "
            f"log_prob{list(jnp.shape(log_prob))}"
        )
    log_ratio = jnp.where(valid, log_prob - sg(old_log_prob), 0.0)
    lengths = jnp.maximum(jnp.sum(valid, axis=-1), 1).astype(log_ratio.dtype)
    return jnp.sum(log_ratio, axis=-1) / lengths


def sequence_ratio_log_prob(log_prob, old_log_prob, mask):
    """Per-token log-probs whose ratio is the sequence-level estimator (GSPO-token).

    Returns ``lp~ = sg(old_log_prob) + x~`` with
    ``x~[b,t] = lp[b,t] - sg(lp[b,t]) + sg(sequence_log_ratio(...)[b])``: in value
    every token of sequence b has the log-ratio of the sequence, ``log s_b``; in
    gradient each token keeps its own ``d lp[b,t]``. So
    ``ppo_clip(lp~, old_log_prob, A)`` is GSPO-token (Zheng et al. 2025), and with
    ``aggregate(..., mode="seq_mean_token_mean")`` and one advantage per sequence it
    has the gradient of sequence-level GSPO; ``klip`` on ``lp~`` is its KLip form
    (any gate). Padded tokens carry no gradient.

    Args:
      log_prob: ``[batch, tokens]`` current log-probabilities.
      old_log_prob: ``[batch, tokens]`` rollout log-probabilities.
      mask: ``[batch, tokens]`` booleans, true on real tokens.

    Returns:
      ``[batch, tokens]`` log-probabilities to pass in place of ``log_prob``.
    """
    sequence = sg(sequence_log_ratio(log_prob, old_log_prob, mask))
    valid = _token_mask(log_prob, mask, "log_prob")
    own = jnp.where(valid, log_prob, 0.0)
    return sg(old_log_prob) + sequence[:, None] + (own - sg(own))


def sapo_gate(tau_pos=1.0, tau_neg=1.05) -> SampleGate:
    """SAPO's soft gate in KLip form: ``g_t = tanh^2(tau * (w - 1) / 2)``.

    SAPO (Gao et al. 2025) maximises ``(4/tau) * sigmoid(tau*(w - 1)) * A`` per token,
    ``tau = tau_pos`` where ``A > 0`` and ``tau_neg`` elsewhere. Its gradient is
    ``sech^2(tau*(w-1)/2) * w*A * d log pi``, which is ``klip``'s ``w*A*(1 - g_t)``
    with this gate: a smooth trust region centred on ``w = 1`` that does not use the
    clip band (``clip_eps`` only matters for the diagnostics).

    Args:
      tau_pos: temperature where ``A > 0`` (scalar or per-token array).
      tau_neg: temperature where ``A <= 0``.

    Returns:
      A ``SampleGate`` for ``klip(..., gate=)``.
    """

    def gate(inputs: GateInputs):
        tau = jnp.where(inputs.advantage > 0, tau_pos, tau_neg)
        return jnp.tanh(0.5 * tau * (inputs.ratio - 1.0)) ** 2

    return SampleGate(gate)


def cispo_gate(*, lower_bound=False) -> SampleGate:
    """CISPO's clipped importance weight in KLip form: ``g_t = 1 - clip(w)/w``.

    CISPO (MiniMax 2025) maximises ``sg(clip(w, lo, hi)) * A * log pi`` per token, so
    its gradient is ``clip(w) * A * d log pi``; ``klip`` gives it with this gate, the
    band of the call setting ``lo = 1 - clip_eps`` and ``hi = 1 + clip_eps_high``.

    - ``lower_bound=False`` (MiniMax-M1's form, no lower bound):
      ``g_t = relu(1 - hi/w)``; tokens with ``w > hi`` keep a gradient capped at
      ``hi * A`` instead of losing it, on both signs of ``A``.
    - ``lower_bound=True``: ``g_t = 1 - clip(w, lo, hi)/w``, which is negative for
      ``w < lo``: those tokens get the larger weight ``lo > w``.

    Returns:
      A ``SampleGate`` for ``klip(..., gate=)``.
    """

    def gate(inputs: GateInputs):
        if lower_bound:
            capped = jnp.clip(inputs.ratio, inputs.lower_edge, inputs.upper_edge)
            return 1.0 - capped / inputs.ratio
        return jnp.maximum(1.0 - inputs.upper_edge / inputs.ratio, 0.0)

    return SampleGate(gate)


def penalty_beta(
    log_prob,
    old_log_prob,
    penalty: Callable[[jax.Array], jax.Array],
    *,
    where=None,
):
    """``extra_beta = -P'(x)`` that adds a per-token penalty ``P(x)`` to ``klip``.

    ``klip(..., extra_beta=penalty_beta(lp, old, P))`` has the gradient of
    ``klip(...) + P(x)``, ``x = lp - old``, because the template's gradient in ``x``
    is ``-(w*A + beta_t)``. Its value adds ``P'(x)*x``, which is ``P(x)`` for a
    positively homogeneous ``P`` such as ``kappa*|x|`` (KL-Cov) and ``2*P(x)`` for a
    quadratic ``(tau/2)*x**2``.

    Args:
      log_prob: ``[...]`` current log-probabilities.
      old_log_prob: ``[...]`` rollout log-probabilities.
      penalty: elementwise ``P``, e.g. ``lambda x: 1.0 * jnp.abs(x)``.
      where: ``[...]`` booleans: apply the penalty only there (e.g. the tokens
        ``top_fraction_mask`` selects), or None for everywhere.

    Returns:
      ``[...]`` coefficients (no gradient).
    """
    log_ratio = sg(log_prob - sg(old_log_prob))
    slope = jax.grad(lambda x: jnp.sum(penalty(x)))(log_ratio)
    beta = -slope
    if where is not None:
        beta = jnp.where(where, beta, 0.0)
    return sg(beta)


def token_covariance(log_prob, advantage, mask):
    """Per-token centred product ``(lp - mean lp) * (A - mean A)`` (no gradient).

    Means are over the valid tokens of the whole batch: the per-token covariance
    between log-probability and advantage that KL-Cov and Clip-Cov (Cui et al. 2025)
    rank tokens by. 0 on padded tokens.

    Args:
      log_prob: ``[batch, tokens]`` current log-probabilities.
      advantage: ``[batch, tokens]`` advantages.
      mask: ``[batch, tokens]`` booleans, true on real tokens.

    Returns:
      ``[batch, tokens]`` centred products.
    """
    valid = _token_mask(log_prob, mask, "log_prob")
    log_prob, advantage = sg(log_prob), sg(advantage)
    count = jnp.maximum(jnp.sum(valid), 1).astype(log_prob.dtype)
    mean_lp = jnp.sum(jnp.where(valid, log_prob, 0.0)) / count
    mean_adv = jnp.sum(jnp.where(valid, advantage, 0.0)) / count
    return jnp.where(valid, (log_prob - mean_lp) * (advantage - mean_adv), 0.0)


def top_fraction_mask(score, mask, *, fraction):
    """The ``k = max(1, floor(fraction * n))`` valid tokens with the largest score.

    ``n`` is the number of valid tokens in the batch; ties go to the earlier token
    (row-major). Batch-coupled selections like this one feed ``klip`` as
    ``gate=`` (1 removes a token's gradient, e.g. Clip-Cov, or the complement of an
    entropy top-20% mask) or as ``penalty_beta(..., where=)`` (KL-Cov).

    Args:
      score: ``[batch, tokens]`` values to rank (e.g. ``token_covariance``, entropy).
      mask: ``[batch, tokens]`` booleans, true on real tokens.
      fraction: share of the valid tokens to select, in (0, 1] (may be traced).

    Returns:
      ``[batch, tokens]`` booleans, false on padded tokens and when none is valid.
    """
    valid = _token_mask(score, mask, "score")
    flat_valid = valid.reshape(-1)
    flat = jnp.where(flat_valid, sg(score).reshape(-1), -jnp.inf)
    order = jnp.argsort(-flat, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size))
    count = jnp.sum(flat_valid)
    k = jnp.maximum(1, jnp.floor(fraction * count).astype(rank.dtype))
    return ((rank < k) & flat_valid).reshape(valid.shape)


__all__ = [
    "AGGREGATIONS",
    "aggregate",
    "cispo_gate",
    "penalty_beta",
    "sapo_gate",
    "sequence_log_ratio",
    "sequence_ratio_log_prob",
    "token_covariance",
    "top_fraction_mask",
]
