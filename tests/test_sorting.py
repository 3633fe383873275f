"""The fast-path sorts equal jax's own: shuffles, float sorts, percentiles."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from klipjax.core import sorting


@pytest.mark.parametrize("n", [1, 2, 3, 100, 512, 1625, 1626, 5000, 70_000])
def test_permutation_is_jaxs_permutation(n):
    # 1626 and up take two rounds of keys; 70,000 needs 17 position bits (3 passes).
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        expected = jax.jit(lambda k: jax.random.permutation(k, n))(key)
        got = jax.jit(lambda k: sorting.permutation(k, n))(key)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_permutation_under_vmap_is_jaxs_permutation():
    keys = jax.random.split(jax.random.PRNGKey(5), 40)
    expected = jax.jit(jax.vmap(lambda k: jax.random.permutation(k, 512)))(keys)
    got = jax.jit(jax.vmap(lambda k: sorting.permutation(k, 512)))(keys)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("n", [5, 512, 3000, 70_000])
def test_stable_argsort_keeps_the_order_of_equal_keys(n):
    rng = np.random.default_rng(n)
    # Few distinct keys, spread over all 32 bits: most keys tie.
    keys = rng.integers(0, 8, n).astype(np.uint32) * np.uint32(0x2468ACE1)
    got = jax.jit(sorting.stable_argsort)(keys)
    np.testing.assert_array_equal(np.asarray(got), np.argsort(keys, kind="stable"))
    batch = rng.integers(0, 2**32, (3, 7, n), dtype=np.uint64).astype(np.uint32)
    np.testing.assert_array_equal(
        np.asarray(sorting.stable_argsort(batch)), np.argsort(batch, -1, kind="stable")
    )


def test_stable_argsort_takes_only_uint32():
    with pytest.raises(TypeError, match="uint32"):
        sorting.stable_argsort(np.arange(4, dtype=np.int32))


def test_sort_floats_is_jnp_sort():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 300)).astype(np.float32)
    x[0, :5] = [np.nan, -np.inf, np.inf, -0.0, 0.0]
    x[1, 10:40] = 1.5  # ties
    x[2, 3] = -np.nan
    got, expected = sorting.sort_floats(x), jnp.sort(x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))  # NaN == NaN
    np.testing.assert_array_equal(
        np.asarray(sorting.sort_floats(x.T, axis=0)), np.asarray(jnp.sort(x.T, axis=0))
    )
    halves = x.astype(jnp.bfloat16)
    np.testing.assert_array_equal(
        np.asarray(sorting.sort_floats(halves), np.float32),
        np.asarray(jnp.sort(halves), np.float32),
    )


@pytest.mark.parametrize("n", [1, 2, 7, 5120])
def test_percentile_is_jnp_percentile(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    x[: n // 3] = 0.0
    for q in [0.0, 10.0, 50.0, 90.0, 100.0]:
        got = jax.jit(lambda x, q=q: sorting.percentiles(x, (q,))[0])(x)
        # The same interpolation; jax may fold the weights as constants, which
        # can round the last bit differently.
        np.testing.assert_allclose(got, jnp.percentile(x, q), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got, np.percentile(x, q), rtol=1e-5, atol=1e-6)
    x[-1] = np.nan
    assert np.isnan(sorting.percentiles(x, (50.0,))[0])


def test_the_shuffle_sorts_take_the_single_operand_path():
    # What makes them fast: each sort is of one array, with no index array beside it
    # (jax's own permutation sorts two: `%16:2 = "stablehlo.sort"(%15, %arg1)`).
    def sorts(fn):
        text = jax.jit(fn).lower(jax.random.PRNGKey(0)).as_text()
        return re.findall(r'(%\w+(?::\d+)?) = "stablehlo.sort"\(([^)]*)\)', text)

    assert len(sorts(lambda k: jax.random.permutation(k, 512))[0][1].split(",")) == 2
    ours = sorts(lambda k: sorting.permutation(k, 512))
    assert len(ours) == 2  # two radix passes
    assert all(":" not in result and "," not in operands for result, operands in ours)


def test_percentiles_share_one_sort_and_match_one_at_a_time():
    x = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    both = jax.jit(lambda x: sorting.percentiles(x, (50.0, 90.0)))
    text = both.lower(x).as_text()
    assert text.count('"stablehlo.sort"') == 1
    for got, q in zip(both(x), (50.0, 90.0)):
        assert np.asarray(got) == np.asarray(sorting.percentiles(x, (q,))[0])


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(TypeError, match="floats"):
        sorting.sort_floats(np.arange(3))
    with pytest.raises(ValueError, match="empty"):
        sorting.percentiles(np.zeros(0, np.float32), (50.0,))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        sorting.percentiles(np.ones(3, np.float32), (50.0, 101.0))
    with pytest.raises(ValueError, match="int >= 0"):
        sorting.permutation(jax.random.PRNGKey(0), -1)
