"""klipjax: PPO-Clip and its per-sample KL forms, end to end in JAX.

A sweep is one compiled program over a run table::

    import klipjax as kj
    res = kj.train(kj.Config(env="CartPole-v1"),
                   kj.grid(loss=["ppo_clip", "klip"], clip_eps=[0.1, 0.2], seeds=5))
    res.frame()    # pandas: one row per (run, update)
    res.summary()  # one row per setting, seeds pooled

``klipjax.losses`` holds the pure loss functions, importable on their own.
"""

from klipjax import losses
from klipjax.config import (
    CodePaths,
    Config,
    ConfigError,
    HParams,
    choice,
    concat,
    grid,
    hparams,
    loguniform,
    sample,
    uniform,
)
from klipjax.engine.trainer import Metrics, Runner, Trainer, make_trainer
from klipjax.engine.training import train
from klipjax.envs import register
from klipjax.outputs.results import Results, load

__version__ = "0.1.0"
__all__ = [
    "CodePaths",
    "Config",
    "ConfigError",
    "HParams",
    "Metrics",
    "Results",
    "Runner",
    "Trainer",
    "__version__",
    "choice",
    "concat",
    "grid",
    "hparams",
    "load",
    "loguniform",
    "losses",
    "make_trainer",
    "register",
    "sample",
    "train",
    "uniform",
]
