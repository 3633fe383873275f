"""What a sweep pays before training: gymnax's render-only imports and the writers'
libraries (pandas, pyarrow, matplotlib, orbax) are deferred to their first use, and
the programs compile with klipjax's CPU options unless the user's XLA_FLAGS set
them."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp

from klipjax.engine import compiler

DEFERRED = textwrap.dedent(
    """
    import sys
    import klipjax.envs
    assert "seaborn" not in sys.modules, "seaborn imported eagerly"
    assert "matplotlib" not in sys.modules, "matplotlib imported eagerly"
    import gymnax.environments.misc.pong as pong
    assert len(pong.sns.color_palette("cubehelix", 3)) == 3  # loads on first use
    assert pong.colors.ListedColormap(["red", "blue"]).N == 2
    import seaborn
    assert seaborn is sys.modules["seaborn"] and hasattr(seaborn, "histplot")
    import matplotlib.pyplot as plt
    figure, _ = plt.subplots()
    assert type(plt).__name__ == "module" and figure is not None
    print("OK")
    """
)


def assert_runs_in_a_fresh_interpreter(code: str) -> None:
    """``code`` (which prints OK at its end) passes in a new Python process."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"MPLBACKEND": "Agg", "PATH": "", "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]


def test_gymnax_render_modules_load_on_first_use():
    assert_runs_in_a_fresh_interpreter(DEFERRED)


WRITERS_DEFERRED = textwrap.dedent(
    """
    import sys, tempfile
    from pathlib import Path
    import klipjax, klipjax.cli
    from klipjax.engine import checkpoint
    late = ("pandas", "pyarrow", "matplotlib.pyplot", "orbax")
    loaded = [name for name in late if name in sys.modules]
    assert not loaded, f"imported before training: {loaded}"
    run_dir = Path(tempfile.mkdtemp())
    unused = checkpoint.SweepCheckpointer(run_dir)
    unused.close()  # nothing saved: nothing to wait for, orbax never needed
    assert "orbax" not in sys.modules and not (run_dir / "checkpoints").exists()
    print("OK")
    """
)


def test_writers_libraries_load_only_when_used():
    assert_runs_in_a_fresh_interpreter(WRITERS_DEFERRED)


def test_cpu_options_apply_unless_xla_flags_say(monkeypatch):
    level = {compiler.LEVEL_FLAG: compiler.CPU_OPTIMIZATION_LEVEL}
    passes = {compiler.DISABLED_PASSES_FLAG: compiler.CPU_DISABLED_PASSES}
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert compiler.options() == level | passes
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert compiler.options() == passes
    monkeypatch.setenv("XLA_FLAGS", "--xla_disable_hlo_passes=algsimp")
    assert compiler.options() == level


def test_cpu_chunk_program_has_no_split_reductions():
    # The skipped pass would turn each large reduction into a reduce-window and a
    # reduce; the compiled program shows whether the option reached XLA.
    x = jnp.ones((128, 4, 4))  # summed over its major axis, as a rollout's steps are
    compiled = compiler.jit(lambda x: jnp.sum(x, axis=0)).lower(x).compile()
    plain = jax.jit(lambda x: jnp.sum(x, axis=0)).lower(x).compile()
    assert "reduce-window" in plain.as_text()
    assert "reduce-window" not in compiled.as_text()
