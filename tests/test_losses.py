"""The loss library: hand cases, the theorem as a property, jit/vmap, float32 exactness."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from klipjax import losses, token_losses

EPS = 0.2


def float64():
    return jax.enable_x64(True)


def random_cases(key, n, dtype, clip_eps=EPS, edge_margin=1e-6):
    """Random log-probs, old log-probs and advantages, kept off the band edges."""
    k1, k2, k3 = jax.random.split(key, 3)
    old = jax.random.uniform(k1, (n,), dtype, -3.0, 0.0)
    log_ratio = jax.random.normal(k2, (n,), dtype) * 0.3
    ratio = np.exp(np.asarray(log_ratio, np.float64))
    on_edge = (np.abs(ratio - (1 + clip_eps)) < edge_margin) | (
        np.abs(ratio - (1 - clip_eps)) < edge_margin
    )
    log_ratio = jnp.where(jnp.asarray(on_edge), 0.0, log_ratio)
    advantage = jax.random.normal(k3, (n,), dtype)
    return old + log_ratio, old, advantage


def reference_ppo_clip_grad(log_prob, old_log_prob, advantage, clip_eps):
    """d mean(ppo_clip) / d log_prob, written out by hand in numpy float64."""
    w = np.exp(np.asarray(log_prob, np.float64) - np.asarray(old_log_prob, np.float64))
    a = np.asarray(advantage, np.float64)
    kill = ((w > 1 + clip_eps) & (a > 0)) | ((w < 1 - clip_eps) & (a < 0))
    return np.where(kill, 0.0, -w * a) / w.size


# Hand-computed cases. One sample each, clip_eps = 0.2 unless stated.


def test_ppo_clip_hand_cases():
    lp = jnp.log(jnp.array([1.5, 1.5, 0.5, 0.5, 1.1]))
    old = jnp.zeros(5)
    adv = jnp.array([2.0, -2.0, -1.0, 1.0, 3.0])
    # w=1.5, A=2: min(3.0, 1.2*2=2.4) = 2.4       -> loss -2.4  (kill)
    # w=1.5, A=-2: min(-3.0, 1.2*-2=-2.4) = -3.0  -> loss 3.0   (pass)
    # w=0.5, A=-1: min(-0.5, 0.8*-1=-0.8) = -0.8  -> loss 0.8   (kill)
    # w=0.5, A=1: min(0.5, 0.8) = 0.5             -> loss -0.5  (pass)
    # w=1.1, A=3: in band, 3.3                    -> loss -3.3
    expected = [-2.4, 3.0, 0.8, -0.5, -3.3]
    np.testing.assert_allclose(
        losses.ppo_clip(lp, old, adv, clip_eps=EPS), expected, rtol=1e-6
    )
    parts = losses.partition(lp, old, adv, clip_eps=EPS)
    assert parts.kill.tolist() == [True, False, True, False, False]
    assert parts.pass_through.tolist() == [False, True, False, True, False]
    assert parts.in_band.tolist() == [False, False, False, False, True]


def test_klip_hand_case_value_beta_and_gradient():
    with float64():
        lp = jnp.log(jnp.array([1.5, 1.1], jnp.float64))
        old = jnp.zeros(2, jnp.float64)
        adv = jnp.array([2.0, 3.0], jnp.float64)
        # Sample 0 is in I_kill: beta = -w*A = -3.0; x = log 1.5 = 0.405465
        # loss = -(w*A + beta*x) = -(3.0 - 3.0*0.405465) = -1.783604
        # Sample 1 is in band: beta = 0, loss = -w*A = -3.3
        beta = losses.klip_beta(lp, old, adv, clip_eps=EPS)
        np.testing.assert_allclose(beta, [-3.0, 0.0], atol=1e-12)
        value = losses.klip(lp, old, adv, clip_eps=EPS)
        np.testing.assert_allclose(
            value, [-(3.0 - 3.0 * math.log(1.5)), -3.3], rtol=1e-12
        )
        # Gradient of the sum: effective advantage A + beta/w is 0 on the killed
        # sample and A elsewhere, so d/dlp = [0, -w*A] = [0, -3.3].
        grad = jax.grad(lambda p: losses.klip(p, old, adv, clip_eps=EPS).sum())(lp)
        np.testing.assert_allclose(grad, [0.0, -3.3], atol=1e-12)


def test_band_edges_are_in_band_and_zero_advantage_is_in_no_set():
    with float64():
        # ratios exactly 1.25 and 0.75 with eps 0.25 (both exact in binary)
        lp = jnp.log(jnp.array([1.25, 0.75, 2.0, 1.0], jnp.float64))
        old = jnp.zeros(4, jnp.float64)
        adv = jnp.array([1.0, -1.0, 0.0, 0.0], jnp.float64)
        ratio = jnp.exp(lp - old)
        assert ratio[0] == 1.25 and ratio[1] == 0.75
        parts = losses.partition(lp, old, adv, clip_eps=0.25)
        assert parts.in_band.tolist() == [True, True, False, True]
        assert parts.kill.tolist() == [False, False, False, False]
        assert parts.pass_through.tolist() == [False, False, False, False]


def test_gradients_agree_exactly_on_the_band_edges():
    # w exactly 1.25 and 0.75 with eps 0.25: the branches of the min tie. The edge is
    # in band, so both forms take the unclipped gradient -w*A: [-1.25, 0.75].
    lp = jnp.log(jnp.array([1.25, 0.75], jnp.float32))
    old, adv = jnp.zeros(2), jnp.array([1.0, -1.0])
    g_clip = jax.grad(lambda p: losses.ppo_clip(p, old, adv, clip_eps=0.25).sum())(lp)
    g_klip = jax.grad(lambda p: losses.klip(p, old, adv, clip_eps=0.25).sum())(lp)
    np.testing.assert_array_equal(g_clip, [-1.25, 0.75])
    np.testing.assert_array_equal(g_klip, g_clip)


def test_soft_min_and_value_loss_hand_cases():
    # w = 1.5, A = 2, eps 0.2, s = 0.1: branches normalised by |A| = 2 are 1.5 and 1.2;
    # softmin = -0.1*log(exp(-15) + exp(-12)) = 1.2 - 0.1*log(1 + exp(-3)) = 1.195151
    # loss = -2 * 1.195151 = -2.390302
    value = losses.soft_min_clip(
        jnp.log(jnp.array([1.5])),
        jnp.zeros(1),
        jnp.array([2.0]),
        clip_eps=EPS,
        softness=0.1,
    )
    np.testing.assert_allclose(
        value, [-2 * (1.2 - 0.1 * math.log1p(math.exp(-3)))], rtol=1e-6
    )
    # v = 1.5, v_old = 1.0, R = 2.0, eps 0.2: (1.5-2)^2 = 0.25; clipped 1.2 -> 0.64
    # loss = 0.5 * max(0.25, 0.64) = 0.32
    vl = losses.clipped_value_loss(
        jnp.array([1.5]), jnp.array([1.0]), jnp.array([2.0]), clip_eps=0.2
    )
    np.testing.assert_allclose(vl, [0.32], rtol=1e-6)


def test_kl_estimators_hand_cases():
    lp, old = jnp.log(jnp.array([2.0])), jnp.zeros(1)
    # x = log 2: sampled = -0.693147; k3 = (2 - 1) - 0.693147 = 0.306853
    np.testing.assert_allclose(losses.sampled_kl(lp, old), [-math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(losses.k3_kl(lp, old), [1 - math.log(2)], rtol=1e-6)
    # KL([0.5, 0.5] || [0.25, 0.75]) = 0.5 log 2 + 0.5 log(2/3) = 0.143841
    kl = losses.categorical_kl(
        jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.25, 0.75]))
    )
    np.testing.assert_allclose(kl, 0.5 * math.log(2) + 0.5 * math.log(2 / 3), rtol=1e-6)
    # KL(N(0, 1) || N(1, 2^2)) = log 2 + (1 + 1)/(2*4) - 1/2 = 0.443147
    kl = losses.gaussian_kl(
        jnp.zeros(1), jnp.zeros(1), jnp.ones(1), jnp.log(jnp.array([2.0]))
    )
    np.testing.assert_allclose(kl, math.log(2) + 2 / 8 - 0.5, rtol=1e-6)


# The theorem and its companions, as properties over many random cases in float64.


@pytest.mark.parametrize("clip_eps", [0.1, 0.2, 0.3])
def test_klip_gradient_equals_ppo_clip_gradient_float64(clip_eps):
    with float64():
        lp, old, adv = random_cases(jax.random.key(1), 4000, jnp.float64, clip_eps)
        grad_clip = jax.grad(
            lambda p: losses.ppo_clip(p, old, adv, clip_eps=clip_eps).mean()
        )(lp)
        grad_klip = jax.grad(
            lambda p: losses.klip(p, old, adv, clip_eps=clip_eps).mean()
        )(lp)
        kill = losses.partition(lp, old, adv, clip_eps=clip_eps).kill
        assert 0.02 < float(kill.mean()) < 0.5  # the property is not vacuous
        np.testing.assert_allclose(grad_klip, grad_clip, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(
            grad_clip,
            reference_ppo_clip_grad(lp, old, adv, clip_eps),
            rtol=1e-13,
            atol=1e-16,
        )
        assert jnp.all(jnp.where(kill, grad_clip, 0.0) == 0.0)


def test_naive_kl_surrogate_has_the_same_gradient_float64():
    """The textbook form -(w*A + sg(beta)*x) agrees with klip's evaluation order."""
    with float64():
        lp, old, adv = random_cases(jax.random.key(2), 2000, jnp.float64)

        def naive(p):
            x = p - old
            beta = losses.klip_beta(p, old, adv, clip_eps=EPS)
            return -(jnp.exp(x) * adv + jax.lax.stop_gradient(beta) * x).mean()

        grad_naive = jax.grad(naive)(lp)
        grad_klip = jax.grad(lambda p: losses.klip(p, old, adv, clip_eps=EPS).mean())(
            lp
        )
        np.testing.assert_allclose(grad_klip, grad_naive, rtol=1e-12, atol=1e-15)
        beta = losses.klip_beta(lp, old, adv, clip_eps=EPS)
        naive_value = -(jnp.exp(lp - old) * adv + beta * (lp - old))
        np.testing.assert_allclose(
            losses.klip(lp, old, adv, clip_eps=EPS), naive_value, rtol=1e-12, atol=1e-15
        )


def test_phi_form_equals_ppo_clip_in_value_float64():
    with float64():
        lp, old, adv = random_cases(jax.random.key(3), 2000, jnp.float64)
        w = jnp.exp(lp - old)
        phi = losses.phi_penalty(lp, old, adv, clip_eps=EPS)
        np.testing.assert_allclose(
            -(w * adv - phi),
            losses.ppo_clip(lp, old, adv, clip_eps=EPS),
            rtol=1e-13,
            atol=1e-15,
        )
        # and in gradient
        g_phi = jax.grad(
            lambda p: (
                -(
                    jnp.exp(p - old) * adv
                    - losses.phi_penalty(p, old, adv, clip_eps=EPS)
                )
            ).mean()
        )(lp)
        g_clip = jax.grad(lambda p: losses.ppo_clip(p, old, adv, clip_eps=EPS).mean())(
            lp
        )
        np.testing.assert_allclose(g_phi, g_clip, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("gate", ["linear_ramp", "sigmoid"])
def test_soft_gates_tend_to_the_step(gate):
    with float64():
        # stay at least 1e-3 away from the edges so the limit is reached uniformly
        lp, old, adv = random_cases(
            jax.random.key(4), 2000, jnp.float64, edge_margin=1e-3
        )
        step_grad = jax.grad(lambda p: losses.klip(p, old, adv, clip_eps=EPS).mean())(
            lp
        )
        errors = []
        for softness in [1e-1, 1e-2, 1e-3, 1e-5]:
            grad = jax.grad(
                lambda p, s=softness: losses.klip(
                    p, old, adv, clip_eps=EPS, gate=gate, softness=s
                ).mean()
            )(lp)
            errors.append(float(jnp.max(jnp.abs(grad - step_grad))))
        assert errors == sorted(errors, reverse=True)
        assert errors[-1] < 1e-10
        # and they vanish far inside the band: the unclipped surrogate's gradient
        old_in = old[:50]
        lp_in = old_in + jnp.linspace(-0.05, 0.05, 50)
        adv_in = jnp.linspace(-1, 1, 50)
        g_soft = jax.grad(
            lambda p: losses.klip(
                p, old_in, adv_in, clip_eps=EPS, gate=gate, softness=1e-3
            ).sum()
        )(lp_in)
        np.testing.assert_allclose(
            g_soft, -jnp.exp(lp_in - old_in) * adv_in, atol=1e-12
        )


def test_soft_min_tends_to_ppo_clip():
    with float64():
        lp, old, adv = random_cases(
            jax.random.key(5), 2000, jnp.float64, edge_margin=1e-3
        )
        clip_value = losses.ppo_clip(lp, old, adv, clip_eps=EPS)
        gaps = [
            float(
                jnp.max(
                    jnp.abs(
                        losses.soft_min_clip(lp, old, adv, clip_eps=EPS, softness=s)
                        - clip_value
                    )
                    / jnp.maximum(jnp.abs(adv), 1e-8)
                )
            )
            for s in [0.1, 0.01, 0.001]
        ]
        # the soft minimum of two equal branches sits s*log 2 below: the bound is tight
        assert gaps == sorted(gaps, reverse=True)
        assert gaps[-1] <= 0.001 * math.log(2) + 1e-12


def test_kl_penalty_with_zero_beta_is_the_unclipped_surrogate():
    with float64():
        lp, old, adv = random_cases(jax.random.key(6), 1000, jnp.float64)
        kl = losses.k3_kl(lp, old)
        value = losses.kl_penalty(lp, old, adv, kl, beta=0.0)
        np.testing.assert_allclose(value, -jnp.exp(lp - old) * adv, rtol=1e-14)
        # beta scales the caller's KL, gradient included
        g = jax.grad(
            lambda p: losses.kl_penalty(
                p, old, adv, losses.sampled_kl(p, old), beta=2.0
            ).sum()
        )(lp)
        np.testing.assert_allclose(g, -jnp.exp(lp - old) * adv - 2.0, rtol=1e-13)


def test_asymmetric_gate_uses_each_shape_on_its_own_edge():
    with float64():
        lp = jnp.log(jnp.array([1.25, 0.75], jnp.float64))  # past both edges by 0.05
        old = jnp.zeros(2, jnp.float64)
        adv = jnp.array([1.0, -1.0], jnp.float64)
        gate = losses.asymmetric_gate(losses.step_gate, losses.linear_ramp_gate(0.1))
        weight = losses.gate_weight(lp, old, adv, clip_eps=EPS, gate=gate)
        # upper edge: step -> 1; lower edge: ramp 0.05/0.1 -> 0.5
        np.testing.assert_allclose(weight, [1.0, 0.5], rtol=1e-12)


def test_old_log_prob_and_advantage_carry_no_gradient():
    lp, old, adv = random_cases(jax.random.key(7), 64, jnp.float32)
    for fn in [
        lambda o, a: losses.ppo_clip(lp, o, a, clip_eps=EPS),
        lambda o, a: losses.klip(lp, o, a, clip_eps=EPS),
        lambda o, a: losses.klip(lp, o, a, clip_eps=EPS, gate="sigmoid", softness=0.05),
        lambda o, a: losses.soft_min_clip(lp, o, a, clip_eps=EPS, softness=0.05),
        lambda o, a: losses.phi_penalty(lp, o, a, clip_eps=EPS),
    ]:
        g_old, g_adv = jax.grad(lambda o, a, f=fn: f(o, a).sum(), argnums=(0, 1))(
            old, adv
        )
        assert jnp.all(g_old == 0) and jnp.all(g_adv == 0)


# Transformations: every function under jit and vmap over clip_eps; token shapes.

POLICY_LOSSES = {
    "ppo_clip": lambda lp, o, a, e: losses.ppo_clip(lp, o, a, clip_eps=e),
    "klip": lambda lp, o, a, e: losses.klip(lp, o, a, clip_eps=e),
    "klip_ramp": lambda lp, o, a, e: losses.klip(
        lp, o, a, clip_eps=e, gate="linear_ramp", softness=e / 4
    ),
    "klip_sigmoid": lambda lp, o, a, e: losses.klip(
        lp, o, a, clip_eps=e, gate="sigmoid", softness=e / 4
    ),
    "klip_beta": lambda lp, o, a, e: losses.klip_beta(lp, o, a, clip_eps=e),
    "soft_min": lambda lp, o, a, e: losses.soft_min_clip(
        lp, o, a, clip_eps=e, softness=e / 4
    ),
    "phi": lambda lp, o, a, e: losses.phi_penalty(lp, o, a, clip_eps=e),
    "kl_penalty": lambda lp, o, a, e: losses.kl_penalty(
        lp, o, a, losses.k3_kl(lp, o), beta=e
    ),
    "in_band": lambda lp, o, a, e: losses.partition(lp, o, a, clip_eps=e).in_band,
    "value": lambda lp, o, a, e: losses.clipped_value_loss(lp, o, a, clip_eps=e),
    # the token-level options are sweepable too
    "ppo_clip_high_dual": lambda lp, o, a, e: losses.ppo_clip(
        lp, o, a, clip_eps=e, clip_eps_high=e + 0.08, dual_clip=1.0 + 5 * e
    ),
    "klip_sample_gate": lambda lp, o, a, e: losses.klip(
        lp, o, a, clip_eps=e, gate=token_losses.cispo_gate(lower_bound=True)
    ),
}


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_jit_and_vmap_over_clip_eps(name):
    fn = POLICY_LOSSES[name]
    lp, old, adv = random_cases(jax.random.key(8), 32, jnp.float32)
    eps_grid = jnp.array([0.1, 0.2, 0.3])
    batched = jax.jit(jax.vmap(fn, in_axes=(None, None, None, 0)))(
        lp, old, adv, eps_grid
    )
    assert batched.shape == (3, 32)
    for i, e in enumerate([0.1, 0.2, 0.3]):
        np.testing.assert_allclose(
            batched[i], fn(lp, old, adv, e), rtol=1e-6, atol=1e-7
        )


def test_token_shaped_inputs_and_masking():
    key = jax.random.key(9)
    lp, old, adv = (x.reshape(4, 16) for x in random_cases(key, 64, jnp.float32))
    per_token = losses.klip(lp, old, adv, clip_eps=EPS)
    assert per_token.shape == (4, 16)
    mask = jnp.arange(16)[None, :] < jnp.array([[16], [8], [4], [1]])
    masked_mean = jnp.sum(per_token * mask) / jnp.sum(mask)
    flat = losses.klip(lp[mask], old[mask], adv[mask], clip_eps=EPS)
    np.testing.assert_allclose(masked_mean, flat.mean(), rtol=1e-5)


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="share one shape"):
        losses.ppo_clip(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3), clip_eps=EPS)
    with pytest.raises(ValueError, match="softness"):
        losses.klip(
            jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), clip_eps=EPS, gate="sigmoid"
        )
    with pytest.raises(ValueError, match="unknown gate"):
        losses.klip(
            jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), clip_eps=EPS, gate="cubic"
        )


# Float32 under jit: the identity is exact, not merely close.


def test_float32_jit_gradients_are_bitwise_identical():
    lp, old, adv = random_cases(jax.random.key(10), 1 << 14, jnp.float32)
    lp = lp.reshape(256, 64)
    old, adv = old.reshape(256, 64), adv.reshape(256, 64)

    @jax.jit
    def grads(lp, old, adv):
        def per_minibatch(args):
            p, o, a = args
            g_clip = jax.grad(lambda q: losses.ppo_clip(q, o, a, clip_eps=EPS).mean())(
                p
            )
            g_klip = jax.grad(lambda q: losses.klip(q, o, a, clip_eps=EPS).mean())(p)
            return g_clip, g_klip

        return jax.lax.map(per_minibatch, (lp, old, adv))

    g_clip, g_klip = grads(lp, old, adv)
    kill = losses.partition(lp, old, adv, clip_eps=EPS).kill
    assert float(kill.mean()) > 0.05
    assert jnp.all(jnp.where(kill, g_klip, 0.0) == 0.0)
    assert float(jnp.max(jnp.abs(g_clip - g_klip))) == 0.0


def test_diagnostics_match_their_definitions():
    lp, old, adv = random_cases(jax.random.key(11), 512, jnp.float32)
    parts = losses.partition(lp, old, adv, clip_eps=EPS)
    fractions = losses.partition_fractions(lp, old, adv, clip_eps=EPS)
    np.testing.assert_allclose(fractions.kill, np.mean(np.asarray(parts.kill)))
    np.testing.assert_allclose(fractions.in_band, np.mean(np.asarray(parts.in_band)))
    beta = np.asarray(losses.klip_beta(lp, old, adv, clip_eps=EPS))
    stats = losses.beta_stats(lp, old, adv, clip_eps=EPS)
    np.testing.assert_allclose(stats.mean, beta.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats.p90, np.percentile(beta, 90), rtol=1e-5)
    kill = np.asarray(parts.kill)
    np.testing.assert_allclose(
        stats.kill_abs_mean, np.abs(beta[kill]).mean(), rtol=1e-5
    )
    # beta_t = -w*A on I_kill: opposite sign to A, a positive penalty on the KL -x
    a, x = np.asarray(adv), np.asarray(lp - old)
    assert np.all(np.sign(beta[kill]) == -np.sign(a[kill])) and np.all(beta[~kill] == 0)
    assert np.all(beta[kill] * -x[kill] > 0)
    w = np.exp(np.asarray(lp, np.float64) - np.asarray(old, np.float64))
    np.testing.assert_allclose(
        losses.approx_kl(lp, old), np.mean(w - 1 - np.log(w)), rtol=1e-3
    )
    np.testing.assert_allclose(
        losses.clip_fraction(lp, old, clip_eps=EPS),
        1 - np.mean(np.asarray(parts.in_band)),
    )


# Clip-higher, dual-clip, per-token radii and masks: the options default to the
# paper's PPO-Clip bit for bit, and the identity with klip holds for each of them.
# Data drawn with numpy and losses run under jit: eager dispatch would compile
# every primitive of every new shape.


def numpy_cases(seed, shape, spread=0.3):
    rng = np.random.default_rng(seed)
    old = rng.uniform(-3.0, 0.0, shape)
    return old + spread * rng.standard_normal(shape), old, rng.standard_normal(shape)


def test_new_options_left_at_their_defaults_change_nothing_bitwise():
    lp, old, adv = map(jnp.asarray, numpy_cases(12, 256))  # float32

    @jax.jit
    def both(lp, old, adv):
        pairs = []
        for fn, defaults in [
            (losses.ppo_clip, {"clip_eps_high": None, "dual_clip": None}),
            (losses.phi_penalty, {"clip_eps_high": EPS, "dual_clip": None}),
            (
                losses.klip,
                {"clip_eps_high": EPS, "dual_clip": None, "extra_beta": None},
            ),
        ]:
            for options in ({}, defaults):
                value, grad = jax.value_and_grad(
                    lambda p, f=fn, o=options: f(p, old, adv, clip_eps=EPS, **o).sum()
                )(lp)
                pairs.append((value, grad))
        fractions = (
            losses.partition_fractions(lp, old, adv, clip_eps=EPS),
            losses.partition_fractions(lp, old, adv, clip_eps=EPS, mask=None),
        )
        return pairs, fractions

    pairs, fractions = both(lp, old, adv)
    for base, new in zip(pairs[::2], pairs[1::2], strict=True):
        np.testing.assert_array_equal(new[0], base[0])
        np.testing.assert_array_equal(new[1], base[1])
    np.testing.assert_array_equal(fractions[1], fractions[0])


def test_clip_higher_and_dual_clip_hand_cases():
    with float64():
        lp = jnp.log(jnp.array([1.25, 1.25, 0.75, 2.5, 3.5], jnp.float64))
        old = jnp.zeros(5, jnp.float64)
        adv = jnp.array([1.0, -1.0, -1.0, -1.0, -1.0], jnp.float64)
        # band (1 - 0.2, 1 + 0.28) = (0.8, 1.28); dual-clip c = 3:
        # w=1.25, A=1:  in band (symmetric 0.2 would kill it) -> loss -1.25
        # w=1.25, A=-1: in band                               -> loss 1.25
        # w=0.75, A=-1: below 0.8, kill: clip 0.8 * -1         -> loss 0.8
        # w=2.5,  A=-1: above, pass, below c: w*A              -> loss 2.5
        # w=3.5,  A=-1: above c: max(-3.5, 3 * -1) = -3        -> loss 3.0 (dual kill)
        options = {"clip_eps": 0.2, "clip_eps_high": 0.28, "dual_clip": 3.0}

        @jax.jit
        def everything(lp):
            grads = [
                jax.grad(lambda p, f=f: f(p, old, adv, **options).sum())(lp)
                for f in (losses.ppo_clip, losses.klip)
            ]
            return (
                losses.ppo_clip(lp, old, adv, **options),
                losses.partition(lp, old, adv, **options),
                grads,
                losses.klip_beta(lp, old, adv, **options),
            )

        value, parts, grads, beta = everything(lp)
        np.testing.assert_allclose(value, [-1.25, 1.25, 0.8, 2.5, 3.0], rtol=1e-12)
        assert parts.kill.tolist() == [False, False, True, False, True]
        assert parts.pass_through.tolist() == [False, False, False, True, False]
        assert parts.in_band.tolist() == [True, True, False, False, False]
        # gradient of the sum: -w*A where the gradient flows, 0 on I_kill
        for grad in grads:
            np.testing.assert_allclose(grad, [-1.25, 1.25, 0.0, 2.5, 0.0], atol=1e-12)
        # beta_t = -w*A on both kills: -0.75*-1 = 0.75 and -3.5*-1 = 3.5
        np.testing.assert_allclose(beta, [0, 0, 0.75, 0, 3.5], atol=1e-12)


OPTION_GRID = [
    {"clip_eps": 0.2, "clip_eps_high": 0.28},
    {"clip_eps": 0.2, "dual_clip": 2.0},
    {"clip_eps": 0.1, "clip_eps_high": 0.3, "dual_clip": 1.5},
    {"clip_eps": "per_token", "clip_eps_high": "per_token", "dual_clip": 2.0},
]


@pytest.mark.parametrize("options", OPTION_GRID)
def test_identity_and_value_dual_hold_for_every_option(options):
    n = 3000
    lp, old, adv = numpy_cases(13, n, spread=0.75)  # w > c often enough
    options = dict(options)
    if options["clip_eps"] == "per_token":
        radii = 0.05 + 0.3 * np.random.default_rng(14).uniform(size=(2, n))
        options["clip_eps"], options["clip_eps_high"] = radii
    w = np.exp(lp - old)
    edges = [
        1 - np.asarray(options["clip_eps"]),
        1 + np.asarray(options.get("clip_eps_high", options["clip_eps"])),
        options.get("dual_clip", np.inf),
    ]
    far = np.all([np.abs(w - e) > 1e-6 for e in edges], axis=0)
    lp, old, adv = lp[far], old[far], adv[far]
    for name in ("clip_eps", "clip_eps_high"):
        if np.ndim(options.get(name)) == 1:
            options[name] = options[name][far]
    with float64():

        @jax.jit
        def check(lp, old, adv, options):
            grads = [
                jax.grad(lambda p, f=f: f(p, old, adv, **options).sum())(lp)
                for f in (losses.ppo_clip, losses.klip)
            ]
            phi = losses.phi_penalty(lp, old, adv, **options)
            values = (
                -(jnp.exp(lp - old) * adv - phi),
                losses.ppo_clip(lp, old, adv, **options),
            )
            return grads, values, losses.partition(lp, old, adv, **options).kill

        (g_clip, g_klip), (v_phi, v_clip), kill = check(lp, old, adv, options)
    assert 0.05 < float(kill.mean()) < 0.6
    if "dual_clip" in options:
        dual = (adv < 0) & (np.exp(lp - old) > options["dual_clip"])
        assert dual.sum() > 20 and np.all(np.asarray(kill)[dual])
    np.testing.assert_allclose(g_klip, g_clip, rtol=1e-13, atol=1e-16)
    assert np.all(np.asarray(g_clip)[np.asarray(kill)] == 0.0)
    np.testing.assert_allclose(v_phi, v_clip, rtol=1e-12, atol=1e-14)


def test_float32_identity_is_bitwise_with_clip_higher_and_dual_clip():
    lp, old, adv = map(jnp.asarray, numpy_cases(15, 1 << 12, spread=0.75))
    options = {"clip_eps": 0.2, "clip_eps_high": 0.28, "dual_clip": 2.0}

    @jax.jit
    def grads(lp):
        g_clip = jax.grad(lambda q: losses.ppo_clip(q, old, adv, **options).mean())
        g_klip = jax.grad(lambda q: losses.klip(q, old, adv, **options).mean())
        return g_clip(lp), g_klip(lp)

    g_clip, g_klip = grads(lp)
    assert float(jnp.max(jnp.abs(g_clip - g_klip))) == 0.0


def test_soft_min_is_exactly_zero_at_zero_advantage():
    def soft_min(p):
        zeros = jnp.zeros(3)
        return losses.soft_min_clip(p, zeros, zeros, clip_eps=EPS, softness=0.1)

    lp = jnp.log(jnp.array([0.5, 1.0, 1.5]))
    value, grad = jax.jit(
        lambda p: (soft_min(p), jax.grad(lambda q: soft_min(q).sum())(p))
    )(lp)
    assert value.tolist() == [0.0, 0.0, 0.0]
    assert grad.tolist() == [0.0, 0.0, 0.0]


def test_masked_statistics_count_only_valid_tokens():
    lp, old, adv = numpy_cases(16, (8, 32))
    lengths = np.array([32, 20, 9, 1, 0, 32, 5, 17])
    mask = np.arange(32)[None, :] < lengths[:, None]
    # Padded tokens hold wild values that would dominate every statistic.
    lp = np.where(mask, lp, old + 3.0)
    options = {"clip_eps": 0.2, "clip_eps_high": 0.28, "dual_clip": 3.0}

    @jax.jit
    def statistics(lp, old, adv, mask):
        return (
            losses.partition_fractions(lp, old, adv, mask=mask, **options),
            losses.beta_stats(lp, old, adv, mask=mask, **options),
            losses.approx_kl(lp, old, mask=mask),
            losses.clip_fraction(lp, old, clip_eps=0.2, clip_eps_high=0.28, mask=mask),
        )

    fractions, stats, kl, clipped = statistics(lp, old, adv, mask)
    flat = tuple(jnp.asarray(x[mask], jnp.float32) for x in (lp, old, adv))
    expected_fractions, beta, kill = jax.jit(
        lambda *data: (
            losses.partition_fractions(*data, **options),
            losses.klip_beta(*data, **options),
            losses.partition(*data, **options).kill,
        )
    )(*flat)
    np.testing.assert_allclose(fractions, expected_fractions, rtol=1e-6)
    beta, kill = np.asarray(beta), np.asarray(kill)
    np.testing.assert_allclose(stats.mean, beta.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats.p50, np.percentile(beta, 50), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.p90, np.percentile(beta, 90), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        stats.kill_abs_mean, np.abs(beta[kill]).mean(), rtol=1e-5
    )
    w = np.exp(np.asarray(flat[0], np.float64) - np.asarray(flat[1], np.float64))
    np.testing.assert_allclose(kl, np.mean(w - 1 - np.log(w)), rtol=1e-4)
    np.testing.assert_allclose(clipped, np.mean((w > 1.28) | (w < 0.8)), rtol=1e-6)
    # an all-padding batch gives zeros, not NaN
    for value in jax.tree.leaves(statistics(lp, old, adv, np.zeros_like(mask))):
        assert float(value) == 0.0


def test_per_sample_options_must_broadcast_to_the_inputs():
    x = jnp.zeros((4, 8))

    def traced(fn, **options):
        # raised while tracing, before anything is compiled or run
        return jax.jit(lambda x: fn(x, x, x, **options))(x)

    with pytest.raises(ValueError, match="clip_eps_high"):
        traced(losses.ppo_clip, clip_eps=0.2, clip_eps_high=jnp.full((3, 8), 0.2))
    with pytest.raises(ValueError, match="clip_eps"):
        traced(losses.klip, clip_eps=jnp.full((2, 4, 8), 0.2))
    with pytest.raises(ValueError, match="mask"):
        traced(losses.partition_fractions, clip_eps=0.2, mask=jnp.ones((4, 7), bool))
    with pytest.raises(ValueError, match="extra_beta"):
        traced(losses.klip, clip_eps=0.2, extra_beta=jnp.zeros(5))
    with pytest.raises(ValueError, match="SampleGate"):
        traced(losses.klip, clip_eps=0.2, context=jnp.zeros((4, 8)))


@pytest.mark.parametrize("masked", [False, True])
def test_beta_percentiles_come_from_one_sort(masked):
    # p50 and p90 (with or without a token mask) read one sorted copy of beta_t.
    rng = np.random.default_rng(0)
    beta = rng.standard_normal(256).astype(np.float32)
    kill = rng.random(256) < 0.2
    mask = rng.random(256) < 0.6 if masked else None
    text = (
        jax.jit(lambda b, k: losses.summarize_beta(b, k, mask=mask))
        .lower(beta, kill)
        .as_text()
    )
    assert text.count('"stablehlo.sort"') == 1
    stats = losses.summarize_beta(beta, kill, mask=mask)
    kept = beta if mask is None else beta[mask]
    np.testing.assert_allclose(stats.p50, np.percentile(kept, 50), rtol=1e-5)
    np.testing.assert_allclose(stats.p90, np.percentile(kept, 90), rtol=1e-5)
