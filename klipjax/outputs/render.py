"""Watching a policy: one episode drawn to a GIF (gymnax tasks, through gymnax's
visualiser) or to an interactive HTML page (Brax tasks, through brax's renderer)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import numpy as np

from klipjax import envs
from klipjax.config.checks import ConfigError
from klipjax.engine import compiler
from klipjax.engine.evaluation import episode_states
from klipjax.envs import brax_adapter
from klipjax.outputs.files import atomic_path, write_atomic
from klipjax.policy import Policy

GIF_DPI = 60  # 360x300 pixels: small enough to commit, clear enough to read


def render(
    policy: Policy,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    deterministic: bool = True,
    max_frames: int | None = None,
    progress: bool = True,
) -> dict:
    """Plays one episode of ``policy`` and draws it to ``path``: a ``.gif`` for a
    gymnax env, a ``.html`` for a Brax env. Returns ``{"path", "return",
    "length", "frames"}``.

    Raises:
        ConfigError: A suffix the env cannot be drawn to, or an env gymnax's
            visualiser does not know.
    """
    out = Path(path)
    spec = envs.make(policy.spec.env)
    brax = isinstance(spec.env, brax_adapter.BraxEnv)
    wanted = ".html" if brax else ".gif"
    if out.suffix.lower() != wanted:
        kind = "a Brax" if brax else "a gymnax"
        raise ConfigError(f"{out}: {kind} episode is drawn to a {wanted} file")
    states, rewards, length = compiler.jit(
        lambda policy, key: episode_states(policy, spec, key, deterministic)
    )(policy, jax.random.PRNGKey(seed))
    length = int(length)
    frames = length if max_frames is None else min(length, max_frames)
    states = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(frames)]
    returns = np.cumsum(np.asarray(rewards[:frames]))
    if brax:
        _brax_html(spec.env, states, out)
    else:
        _gymnax_gif(spec, states, returns, out, progress)
    return {
        "path": out,
        "return": float(np.sum(np.asarray(rewards))),
        "length": length,
        "frames": frames,
    }


def _gymnax_gif(spec, states, returns, out: Path, progress: bool) -> None:
    # Classic-control frames come from gymnasium's pygame renderer: headless, silent.
    for name in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
        os.environ.setdefault(name, "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    from matplotlib import animation
    from tqdm import tqdm

    missing = (
        f"drawing {spec.env.name} needs gymnasium's classic-control renderer: "
        "pip install 'klipjax[render]'"
    )
    try:
        from gymnax.visualize.visualizer import Visualizer
    except ImportError as err:
        raise ConfigError(f"{missing} ({err})") from err
    visualizer = Visualizer(spec.env, spec.params, states, returns)
    try:
        visualizer.init()
    except Exception as err:  # gymnasium's DependencyNotInstalled: no pygame
        import matplotlib.pyplot as plt

        plt.close(visualizer.fig)
        if "not installed" in str(err) or isinstance(err, ImportError):
            raise ConfigError(f"{missing} ({err})") from err
        raise
    if not hasattr(visualizer, "im"):  # it draws nothing for envs it does not know
        raise ConfigError(f"{spec.env.name}: gymnax's visualiser cannot draw this env")
    movie = animation.FuncAnimation(
        visualizer.fig,
        visualizer.update,
        frames=len(states),
        blit=False,
        interval=visualizer.interval,
    )
    writer = animation.PillowWriter(fps=1000 // visualizer.interval)
    try:
        with (
            tqdm(
                total=len(states),
                unit="frame",
                desc="drawing",
                disable=not progress,
                file=sys.stderr,
            ) as bar,
            atomic_path(out) as temporary,
        ):
            movie.save(
                temporary,
                writer=writer,
                dpi=GIF_DPI,
                progress_callback=lambda done, total: bar.update(1),
            )
    finally:
        import matplotlib.pyplot as plt

        plt.close(visualizer.fig)


def _brax_html(env, states, out: Path) -> None:
    from brax.io import html

    pipeline = [env.brax_state(state).pipeline_state for state in states]
    write_atomic(out, html.render(env.brax_env.sys, pipeline))
