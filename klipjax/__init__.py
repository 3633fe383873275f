"""klipjax: PPO-Clip and its per-sample KL forms, end to end in JAX.

A sweep is one compiled program over a run table::

    import klipjax as kj
    res = kj.train(kj.Config(env="CartPole-v1"),
                   kj.grid(loss=["ppo_clip", "klip"], clip_eps=[0.1, 0.2], seeds=5))
    res.frame()    # pandas: one row per (run, update)
    res.summary()  # one row per setting, seeds pooled
    policy = res.policy(0)           # pure JAX: policy.act(obs)
    kj.evaluate(policy, episodes=100)
    policy.save("policy/")           # kj.load_policy("policy/") anywhere

``klipjax.losses`` holds the pure loss functions, importable on their own.
``klipjax.stats`` compares variants over seeds: IQM, bootstrap confidence
intervals, probability of improvement, performance profiles.
"""

from klipjax import losses, stats
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
from klipjax.engine import distributed
from klipjax.engine.training import train
from klipjax.outputs.results import Results, load

# Imported on first use: the environments touch a device when imported, and
# ``klipjax.distributed.initialize()`` must come before that.
_LAZY = {
    "evaluate": "klipjax.engine.evaluation",
    "Metrics": "klipjax.engine.trainer",
    "Runner": "klipjax.engine.trainer",
    "Trainer": "klipjax.engine.trainer",
    "make_trainer": "klipjax.engine.trainer",
    "register": "klipjax.envs",
    "Policy": "klipjax.policy",
    "load_policy": "klipjax.policy",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'klipjax' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "CodePaths",
    "Config",
    "ConfigError",
    "HParams",
    "Metrics",
    "Policy",
    "Results",
    "Runner",
    "Trainer",
    "__version__",
    "choice",
    "concat",
    "distributed",
    "evaluate",
    "grid",
    "hparams",
    "load",
    "load_policy",
    "loguniform",
    "losses",
    "make_trainer",
    "register",
    "sample",
    "stats",
    "train",
    "uniform",
]
