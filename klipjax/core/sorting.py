"""Sorts that XLA:CPU runs on its fast path, with the results of jax's own.

XLA:CPU sorts a single unsigned-integer array with a plain comparison several
times faster than what ``jnp.sort`` of floats or ``jax.random.permutation`` emit (a
total-order float comparator; a key array sorted together with an index array): on
a 2-core x86-64 CPU, 4 x 5120 floats took 3.5 ms against 0.44 ms, 40 permutations of
512 2.4 ms against 0.33 ms per pass. In a PPO update those two sorts (the epochs'
minibatch shuffles, the beta_t percentiles) were about a tenth of the kernel time,
and the CartPole chunk program ran about 10% faster without their cost
(docs/benchmarks.md). So floats are sorted as order-preserving unsigned keys, and a
stable argsort is built from sorts of keys that carry their position in their low
bits. The results equal ``jnp.sort`` / ``jax.random.permutation``, and
``jnp.percentile`` up to the rounding of its interpolation (tests/test_sorting.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_UINT = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def sort_floats(x, axis: int = -1):
    """``jnp.sort(x, axis)`` for floats: NaNs last (every NaN as the positive
    quiet NaN), ``-0.0`` as ``+0.0``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"sort_floats takes floats, got {x.dtype}")
    if x.dtype == jnp.bfloat16:
        return sort_floats(x.astype(jnp.float32), axis).astype(jnp.bfloat16)
    nbits = jnp.finfo(x.dtype).bits
    unsigned = _UINT[nbits]
    sign = unsigned(1 << (nbits - 1))
    x = jnp.where(jnp.isnan(x), jnp.nan, jnp.where(x == 0, 0, x)).astype(x.dtype)
    bits = lax.bitcast_convert_type(x, unsigned)
    # Negative floats order in reverse of their bits: flip them; set the sign bit
    # of the others so that they order after every negative one.
    keys = jnp.where(bits & sign, ~bits, bits | sign)
    keys = lax.sort(keys, dimension=axis % x.ndim, is_stable=False)
    bits = jnp.where(keys & sign, keys ^ sign, ~keys)
    return lax.bitcast_convert_type(bits, x.dtype)


def percentiles(x, qs):
    """``jnp.percentile(x, q)`` over all of ``x`` for each ``q`` in ``qs`` (linear
    interpolation; NaN if any element is NaN), from one sort on the fast path."""
    x = jnp.ravel(jnp.asarray(x))
    n = x.shape[0]
    if n == 0:
        raise ValueError("percentiles of an empty array")
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q!r}: expected a value in [0, 100]")
    ordered = sort_floats(jnp.where(jnp.any(jnp.isnan(x)), jnp.nan, x))
    results = []
    for q in qs:
        position = jnp.true_divide(jnp.asarray(q, x.dtype), 100.0) * (n - 1)
        low, high = jnp.floor(position), jnp.ceil(position)
        high_weight = position - low
        low_weight = 1 - high_weight
        low = jnp.clip(low, 0, n - 1).astype(jnp.int32)
        high = jnp.clip(high, 0, n - 1).astype(jnp.int32)
        results.append(ordered[low] * low_weight + ordered[high] * high_weight)
    return tuple(results)


def stable_argsort(keys):
    """``jnp.argsort(keys, axis=-1, stable=True)`` for ``uint32`` keys.

    A least-significant-digit radix sort whose digits are sorted by XLA: each pass
    sorts one digit of the keys with the element's position in the current order
    in the low bits (so all values differ and the order of equal digits is kept),
    for ``b`` position bits in 32 - ``b`` bit digits: two passes up to 65,536
    elements."""
    keys = jnp.asarray(keys)
    if keys.dtype != jnp.uint32:
        raise TypeError(f"stable_argsort takes uint32 keys, got {keys.dtype}")
    n = keys.shape[-1]
    position_bits = max(1, (n - 1).bit_length())
    if position_bits > 24:  # digits of 8 bits or less: the plain sort is as good
        index = lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
        return lax.sort((keys, index), dimension=keys.ndim - 1, num_keys=1)[1]
    digit_bits = 32 - position_bits
    position = lax.broadcasted_iota(jnp.uint32, keys.shape, keys.ndim - 1)
    order = position.astype(jnp.int32)
    for shift in range(0, 32, digit_bits):
        digit = (keys >> shift) & jnp.uint32((1 << min(digit_bits, 32 - shift)) - 1)
        packed = lax.sort(
            (digit << position_bits) | position,
            dimension=keys.ndim - 1,
            is_stable=False,
        )
        moved = (packed & jnp.uint32((1 << position_bits) - 1)).astype(jnp.int32)
        order = jnp.take_along_axis(order, moved, axis=-1)
        keys = jnp.take_along_axis(keys, moved, axis=-1)
    return order


def permutation(key, n: int):
    """``jax.random.permutation(key, n)`` (the same draws: rounds of sorting
    ``arange(n)`` by random 32-bit keys, as many as jax takes)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"permutation of {n!r} elements: expected an int >= 0")
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    x = jnp.arange(n)
    for _ in range(rounds):
        key, subkey = jax.random.split(key)
        x = x[stable_argsort(jax.random.bits(subkey, (n,), jnp.uint32))]
    return x
