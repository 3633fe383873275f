"""klipjax's straight-line Threefry lowering gives jax's random numbers."""

import hashlib
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from klipjax.engine import compiler, threefry

# Known answers of Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123's
# kat_vectors): (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


def digest() -> str:
    """Random numbers of several kinds, drawn in one program and hashed."""

    def draws(key):
        return (
            jax.random.bits(key, (1000,)),
            jax.random.normal(jax.random.split(key, 7)[3], (5, 3)),
            jax.random.permutation(key, 100),
            jax.random.uniform(key, (3, 2)),
        )

    out = jax.jit(jax.vmap(draws))(jax.random.split(jax.random.PRNGKey(3), 4))
    return hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in out)).hexdigest()


def test_the_hash_matches_the_known_answers():
    for key, counter, expected in KNOWN_ANSWERS:
        got = jax.jit(threefry.threefry2x32)(*map(np.uint32, key + counter))
        assert tuple(int(x) for x in got) == expected


def test_installed_lowering_draws_what_jax_draws():
    # jax's own lowering: a process that imports this module installs nothing.
    script = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    script += "import test_threefry; print(test_threefry.digest())"
    reference = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    compiler.jit(lambda x: x)  # installs klipjax's lowering here (idempotent)
    assert digest() == reference


def test_the_installed_lowering_has_no_loop():
    compiler.jit(lambda x: x)
    text = (
        jax.jit(lambda k: jax.random.bits(k, (8,)))
        .lower(jax.random.PRNGKey(0))
        .compile()
        .as_text()
    )
    assert " while(" not in text


def test_hash_broadcasts_its_words():
    x0, x1 = threefry.threefry2x32(
        np.uint32(1), np.uint32(2), jnp.arange(4, dtype=jnp.uint32), np.uint32(7)
    )
    assert x0.shape == x1.shape == (4,)
    first = threefry.threefry2x32(1, 2, 2, 7)
    assert (int(x0[2]), int(x1[2])) == tuple(int(v) for v in first)
