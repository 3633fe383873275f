"""Token-level use: each library's loss, restated from its formula, against the KLip
template with the matching gate or beta (same gradient to 1e-12 in float64), a
wrong-side clip as the negative control, and the aggregation modes by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from klipjax import losses
from klipjax import token_losses as tl

sg = jax.lax.stop_gradient
BATCH, TOKENS = 12, 20
LENGTHS = np.array([20, 13, 0, 7, 20, 1, 16, 9, 20, 4, 11, 18])  # one empty sequence


def float64():
    return jax.enable_x64(True)


def token_batch(seed, spread=0.35, far_from=()):
    """Random ``[batch, tokens]`` log-probs, advantages (one per sequence, GRPO-like,
    plus token noise) and a right-padded mask, drawn with numpy (no compilation).
    Tokens whose ratio lies within 1e-6 of an edge in ``far_from`` (callables of
    ``(ratio, old_prob)``) are set to ratio 1."""
    rng = np.random.default_rng(seed)
    shape = (BATCH, TOKENS)
    old = rng.uniform(-3.0, -0.05, shape)
    log_ratio = spread * rng.standard_normal(shape)
    advantage = rng.standard_normal((BATCH, 1)) + 0.3 * rng.standard_normal(shape)
    ratio, old_prob = np.exp(log_ratio), np.exp(old)
    near = np.zeros(shape, bool)
    for edge in far_from:
        near |= np.abs(ratio - edge(ratio, old_prob)) < 1e-6
    log_ratio[near] = 0.0
    mask = np.arange(TOKENS)[None, :] < LENGTHS[:, None]
    return tuple(map(jnp.asarray, (old + log_ratio, old, advantage, mask)))


def jitted(fn, *args, **options):
    """``fn(*args, **options)`` compiled as one program (faster than op by op)."""
    return jax.jit(lambda *a: fn(*a, **options))(*args)


def token_mean(loss, mask):
    """verl's token-mean as written: masked sum over masked count."""
    return jnp.sum(loss * mask) / jnp.sum(mask)


def seq_mean_token_mean(loss, mask):
    """tunix's sequence-mean-token-mean as written: lengths clipped at 1, the mean
    over non-empty rows (verl's adds 1e-8 to the lengths instead, a 1e-8 relative
    change that a 1e-12 comparison would see)."""
    lengths = jnp.sum(mask, axis=-1)
    per_sequence = jnp.sum(loss * mask, axis=-1) / jnp.clip(lengths, 1)
    return jnp.sum(per_sequence) / jnp.sum(lengths > 0)


def assert_same_gradient(port, template, log_prob):
    g_port = jax.jit(jax.grad(port))(log_prob)
    g_template = jax.jit(jax.grad(template))(log_prob)
    np.testing.assert_allclose(g_template, g_port, rtol=1e-12, atol=1e-15)
    return g_port


def klip_token_mean(old, adv, mask, **options):
    return lambda p: tl.aggregate(
        losses.klip(p, old, adv, **options), mask, mode="token_mean"
    )


# Clip-higher (DAPO): eps_low 0.2, eps_high 0.28.


def test_clip_higher_matches_its_port():
    with float64():
        edges = (lambda w, mu: 0.8, lambda w, mu: 1.28)
        lp, old, adv, mask = token_batch(1, far_from=edges)

        def port(p):
            w = jnp.exp(p - old)
            per_token = jnp.maximum(-adv * w, -adv * jnp.clip(w, 1 - 0.2, 1 + 0.28))
            return token_mean(per_token, mask)

        options = {"clip_eps": 0.2, "clip_eps_high": 0.28}
        grad = assert_same_gradient(
            port, klip_token_mean(old, adv, mask, **options), lp
        )
        kill = jitted(losses.partition, lp, old, adv, **options).kill & mask
        assert int(kill.sum()) > 10 and jnp.all(jnp.where(kill, grad, 0.0) == 0)
        assert jnp.all(jnp.where(mask, 0.0, grad) == 0)  # padding carries no gradient


# Dual-clip (verl's vanilla loss, always on there with c = 3) with clip-higher; c = 1.6
# here so that the region A < 0, w > c is well populated.


def dual_clip_port(old, adv, mask, c):
    def port(p):
        w = jnp.exp(p - old)
        clipped = jnp.maximum(-adv * w, -adv * jnp.clip(w, 1 - 0.2, 1 + 0.28))
        per_token = jnp.where(adv < 0, jnp.minimum(-adv * c, clipped), clipped)
        return token_mean(per_token, mask)

    return port


def test_dual_clip_matches_its_port():
    with float64():
        edges = (lambda w, mu: 0.8, lambda w, mu: 1.28, lambda w, mu: 1.6)
        lp, old, adv, mask = token_batch(2, spread=0.7, far_from=edges)
        dual = (adv < 0) & (np.exp(lp - old) > 1.6) & mask
        assert int(dual.sum()) >= 5
        options = {"clip_eps": 0.2, "clip_eps_high": 0.28, "dual_clip": 1.6}
        grad = assert_same_gradient(
            dual_clip_port(old, adv, mask, 1.6),
            klip_token_mean(old, adv, mask, **options),
            lp,
        )
        assert jnp.all(jnp.where(dual, grad, 0.0) == 0)


# Per-token radii: DPPO's binary-TV mask keeps a token's gradient unless its
# probability moved more than delta in the harmful direction, i.e. PPO-Clip with
# eps_t = delta / mu_t (mu_t = pi_old of the token).


def test_dppo_binary_tv_is_ppo_clip_with_per_token_radii():
    with float64():
        delta = 0.15
        edges = (lambda w, mu: 1 + delta / mu, lambda w, mu: 1 - delta / mu)
        lp, old, adv, mask = token_batch(3, spread=0.5, far_from=edges)

        def port(p):
            prob, old_prob = jnp.exp(p), jnp.exp(old)
            keep = jnp.where(
                adv > 0, prob - old_prob <= delta, prob - old_prob >= -delta
            )
            ratio = sg(jnp.minimum(jnp.exp(p - old), 20.0))
            return token_mean(-adv * ratio * p * sg(keep.astype(p.dtype)), mask)

        eps_t = delta / jnp.exp(old)
        grad = assert_same_gradient(
            port, klip_token_mean(old, adv, mask, clip_eps=eps_t), lp
        )
        kill = jitted(losses.partition, lp, old, adv, clip_eps=eps_t).kill & mask
        assert int(kill.sum()) > 5 and jnp.all(jnp.where(kill, grad, 0.0) == 0)


# SAPO: (4/tau) * sigmoid(tau*(w - 1)) * A, tau_pos 1.0, tau_neg 1.05.


def test_sapo_matches_its_port():
    with float64():
        lp, old, adv, mask = token_batch(4, spread=0.8)

        def port(p):
            w = jnp.exp(p - old)
            tau = jnp.where(adv > 0, 1.0, 1.05)
            per_token = -(4.0 / tau) * jax.nn.sigmoid(tau * (w - 1.0)) * adv
            return seq_mean_token_mean(per_token, mask)

        def template(p):
            per_token = losses.klip(p, old, adv, clip_eps=0.2, gate=tl.sapo_gate())
            return tl.aggregate(per_token, mask, mode="seq_mean_token_mean")

        assert_same_gradient(port, template, lp)


# CISPO: sg(clip(w)) * A * log pi, upper bound only (MiniMax-M1) and two-sided.


@pytest.mark.parametrize("lower_bound", [False, True])
def test_cispo_matches_its_port(lower_bound):
    with float64():
        edges = (lambda w, mu: 0.8, lambda w, mu: 1.28)
        lp, old, adv, mask = token_batch(5, spread=0.5, far_from=edges)
        low = 1 - 0.2 if lower_bound else 0.0

        def port(p):
            weight = sg(jnp.clip(jnp.exp(p - old), low, 1 + 0.28))
            return token_mean(-weight * adv * p, mask)

        gate = tl.cispo_gate(lower_bound=lower_bound)
        template = klip_token_mean(
            old, adv, mask, clip_eps=0.2, clip_eps_high=0.28, gate=gate
        )
        assert_same_gradient(port, template, lp)
        weight = jitted(
            losses.gate_weight,
            lp,
            old,
            adv,
            clip_eps=0.2,
            clip_eps_high=0.28,
            gate=gate,
        )
        # below the band the two-sided form amplifies: a negative gate
        assert bool(jnp.any(weight < 0)) == lower_bound


# GSPO: the sequence-level loss as its paper writes it, against ppo_clip/klip on the
# helper's per-token log-probs (GSPO-token with one advantage per sequence).


def test_gspo_token_through_the_helper_matches_sequence_level_gspo():
    with float64():
        eps_low, eps_high = 0.03, 0.04
        lp, old, adv, mask = token_batch(6, spread=0.3)
        seq_adv = adv[:, :1]
        lengths = jnp.asarray(LENGTHS)
        # keep every sequence ratio off the band edges
        x = np.where(mask, np.asarray(lp - old), 0.0)
        s = np.exp(x.sum(-1) / np.maximum(LENGTHS, 1))
        near = (np.abs(s - (1 - eps_low)) < 1e-6) | (np.abs(s - (1 + eps_high)) < 1e-6)
        s[near] = 1.0
        lp = jnp.where(jnp.asarray(near)[:, None], old, lp)

        def port(p):
            x = jnp.where(mask, p - old, 0.0)
            ratio = jnp.exp(jnp.sum(x, -1) / jnp.maximum(lengths, 1))
            clipped = jnp.clip(ratio, 1 - eps_low, 1 + eps_high)
            per_sequence = -jnp.minimum(ratio * seq_adv[:, 0], clipped * seq_adv[:, 0])
            rows = lengths > 0
            return jnp.sum(jnp.where(rows, per_sequence, 0.0)) / jnp.sum(rows)

        options = {"clip_eps": eps_low, "clip_eps_high": eps_high}
        token_adv = jnp.broadcast_to(seq_adv, lp.shape)

        def template(loss_fn):
            def objective(p):
                lp_seq = tl.sequence_ratio_log_prob(p, old, mask)
                per_token = loss_fn(lp_seq, old, token_adv, **options)
                return tl.aggregate(per_token, mask, mode="seq_mean_token_mean")

            return objective

        grad = assert_same_gradient(port, template(losses.klip), lp)
        assert_same_gradient(port, template(losses.ppo_clip), lp)
        a = np.asarray(seq_adv[:, 0])
        killed_rows = ((s > 1 + eps_high) & (a > 0)) | ((s < 1 - eps_low) & (a < 0))
        assert killed_rows.sum() >= 2 and (~killed_rows & (LENGTHS > 0)).sum() >= 2
        assert np.all(np.asarray(grad)[killed_rows] == 0)

        # GSPO-token with per-token advantages, as verl writes it
        def token_port(p):
            x = jnp.where(mask, p - old, 0.0)
            seq_x = jnp.sum(x, -1, keepdims=True) / jnp.maximum(lengths, 1)[:, None]
            ratio = jnp.exp(jnp.minimum(p - sg(p) + sg(seq_x), 10.0))
            clipped = jnp.clip(ratio, 1 - eps_low, 1 + eps_high)
            per_token = jnp.maximum(-adv * ratio, -adv * clipped)
            return seq_mean_token_mean(per_token, mask)

        def token_template(p):
            lp_seq = tl.sequence_ratio_log_prob(p, old, mask)
            per_token = losses.klip(lp_seq, old, adv, **options)
            return tl.aggregate(per_token, mask, mode="seq_mean_token_mean")

        assert_same_gradient(token_port, token_template, lp)


# KL-Cov: -A*w, plus kappa*|x| on the top share of tokens by Cov(log pi, A).


def test_kl_cov_matches_its_port_with_extra_beta():
    with float64():
        kappa, share = 1.0, 0.05
        lp, old, adv, mask = token_batch(7, spread=0.4)
        # the selection, as the library makes it: numpy over the valid tokens
        valid_lp, valid_adv = np.asarray(lp)[np.asarray(mask)], np.asarray(adv)[mask]
        cov = (valid_adv - valid_adv.mean()) * (valid_lp - valid_lp.mean())
        count = max(1, int(len(cov) * share))
        chosen = np.zeros(len(cov), bool)
        chosen[np.argsort(-cov, kind="stable")[:count]] = True
        selected = np.zeros(lp.shape, bool)
        selected[np.asarray(mask)] = chosen

        def port(p):
            x = p - old
            per_token = -adv * jnp.exp(x) + jnp.where(selected, kappa * jnp.abs(x), 0.0)
            return token_mean(per_token, mask)

        tokens = jax.jit(
            lambda p: tl.top_fraction_mask(
                tl.token_covariance(p, adv, mask), mask, fraction=share
            )
        )(lp)
        np.testing.assert_array_equal(tokens, selected)

        def template(p):
            extra = tl.penalty_beta(p, old, lambda x: kappa * jnp.abs(x), where=tokens)
            # no clip: the gate is a precomputed array of zeros
            per_token = losses.klip(
                p, old, adv, clip_eps=0.2, gate=jnp.zeros(lp.shape), extra_beta=extra
            )
            return tl.aggregate(per_token, mask, mode="token_mean")

        assert_same_gradient(port, template, lp)
        # |x| is homogeneous, so the value matches too
        np.testing.assert_allclose(jitted(template, lp), jitted(port, lp), rtol=1e-12)


# A quadratic penalty on the log-ratio: -A*w + (tau/2)*x^2 (gradient only: the
# template's value carries tau*x^2).


def test_quadratic_penalty_matches_its_port_in_gradient():
    with float64():
        tau = 0.5
        lp, old, adv, mask = token_batch(10, spread=0.4)

        def port(p):
            x = p - old
            return token_mean(-adv * jnp.exp(x) + 0.5 * tau * x**2, mask)

        def template(p):
            extra = tl.penalty_beta(p, old, lambda x: 0.5 * tau * x**2)
            per_token = losses.klip(
                p, old, adv, clip_eps=0.2, gate=jnp.zeros(p.shape), extra_beta=extra
            )
            return tl.aggregate(per_token, mask, mode="token_mean")

        assert_same_gradient(port, template, lp)
        beta = jitted(
            losses.klip_beta,
            lp,
            old,
            adv,
            clip_eps=0.2,
            gate=0.0,
            extra_beta=-tau * (lp - old),
        )
        np.testing.assert_allclose(beta, -tau * (lp - old), rtol=1e-12)


# The negative control: one JAX library's clip for A < 0 is on the wrong side.


def test_wrong_side_clip_for_negative_advantages_is_reported_as_different():
    with float64():
        edges = (lambda w, mu: 0.8, lambda w, mu: 1.2)
        lp, old, adv, mask = token_batch(8, spread=0.5, far_from=edges)

        def wrong_side(p):
            w = jnp.exp(p - old)
            clipped = jnp.clip(w, 0.8, 1.2)
            objective = jnp.where(
                adv >= 0,
                jnp.minimum(w * adv, clipped * adv),
                jnp.maximum(w * adv, clipped * adv),
            )
            return token_mean(-objective, mask)

        template = klip_token_mean(old, adv, mask, clip_eps=0.2)
        with pytest.raises(AssertionError):
            assert_same_gradient(wrong_side, template, lp)

        def right_side(p):
            w = jnp.exp(p - old)
            objective = jnp.minimum(w * adv, jnp.clip(w, 0.8, 1.2) * adv)
            return token_mean(-objective, mask)

        assert_same_gradient(right_side, template, lp)


# Gates fed by arrays and by a per-token context.


def test_precomputed_gate_array_and_position_context():
    with float64():
        edges = (lambda w, mu: 0.8, lambda w, mu: 1.2)
        lp, old, adv, mask = token_batch(9, far_from=edges)
        position = jnp.broadcast_to(jnp.arange(TOKENS), lp.shape)

        # An array gate of 1 removes exactly those tokens' gradient (a staleness or
        # entropy-quantile mask); 0 leaves the unclipped surrogate.
        stale = position % 3 == 0
        grad = jax.jit(
            jax.grad(lambda p: losses.klip(p, old, adv, clip_eps=0.2, gate=stale).sum())
        )(lp)
        unclipped = -jnp.exp(lp - old) * adv
        np.testing.assert_allclose(grad, jnp.where(stale, 0.0, unclipped), atol=1e-15)

        # A position-conditioned gate: clip only from token 8 on.
        @losses.SampleGate
        def late_clip(inputs):
            return jnp.where(inputs.context >= 8, inputs.distance > 0, False)

        def template(p):
            per_token = losses.klip(
                p, old, adv, clip_eps=0.2, gate=late_clip, context=position
            )
            return tl.aggregate(per_token, mask, mode="token_mean")

        def port(p):
            clipped = losses.ppo_clip(p, old, adv, clip_eps=0.2)
            unclipped = -jnp.exp(p - old) * adv
            return token_mean(jnp.where(position >= 8, clipped, unclipped), mask)

        assert_same_gradient(port, template, lp)


# Aggregation, by hand.


def test_aggregation_modes_by_hand():
    loss = jnp.array(
        [
            [1.0, 2.0, 3.0, 4.0],
            [5.0, 6.0, 99.0, 99.0],
            [99.0, 99.0, 99.0, 99.0],
            [jnp.nan, jnp.inf, -1.0, 0.0],
        ]
    )
    mask = jnp.array(
        [
            [True, True, True, True],
            [True, True, False, False],
            [False, False, False, False],  # an empty sequence
            [False, False, True, True],  # non-finite values on padding
        ]
    )
    # valid tokens: 1 2 3 4 | 5 6 | - | -1 0  -> sum 20, count 8
    # per-sequence sums 10, 11, (empty), -1; means 2.5, 5.5, -0.5
    expected = {
        "token_mean": 20 / 8,
        "seq_mean_token_mean": (2.5 + 5.5 - 0.5) / 3,
        "seq_mean_token_sum": (10 + 11 - 1) / 3,
        "seq_mean_token_sum_norm": 20 / (4 * 4),
        "token_sum": 20.0,
    }

    @jax.jit
    def every_mode(loss, mask):
        values = {m: tl.aggregate(loss, mask, mode=m) for m in tl.AGGREGATIONS}
        grads = {
            m: jax.grad(lambda x, m=m: tl.aggregate(x, mask, mode=m))(loss)
            for m in tl.AGGREGATIONS
        }
        values["horizon_10"] = tl.aggregate(
            loss, mask, mode="seq_mean_token_sum_norm", horizon=10
        )
        return values, grads

    values, grads = every_mode(loss, mask)
    for mode, value in expected.items():
        np.testing.assert_allclose(values[mode], value, rtol=1e-6)
    np.testing.assert_allclose(values["horizon_10"], 20 / (4 * 10), rtol=1e-6)
    # the gradient is finite and 0 on padding, whatever the padding holds
    for grad in grads.values():
        assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)
    # an all-empty batch gives 0, not NaN, and a zero gradient
    values, grads = every_mode(loss, jnp.zeros_like(mask))
    assert all(float(v) == 0.0 for v in values.values())
    assert all(np.all(np.asarray(g) == 0.0) for g in grads.values())


def test_token_level_errors_are_value_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\[batch, tokens\]"):
        tl.aggregate(jnp.zeros(3), jnp.ones(3, bool), mode="token_mean")
    with pytest.raises(ValueError, match="mask"):
        tl.aggregate(x, jnp.ones((2, 4), bool), mode="token_mean")
    with pytest.raises(ValueError, match="unknown aggregation"):
        tl.aggregate(x, None, mode="grpo")
    with pytest.raises(ValueError, match="horizon"):
        tl.aggregate(x, None, mode="token_mean", horizon=8)
    with pytest.raises(ValueError, match="old_log_prob"):
        tl.sequence_ratio_log_prob(x, jnp.zeros((2, 4)), jnp.ones((2, 3), bool))
