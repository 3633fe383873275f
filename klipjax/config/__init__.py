"""Configuring a sweep: ``Config`` (static), the ``HParams`` run table, and files.

``settings`` defines the two, ``run_table`` builds and reads tables from names and
values, ``checks`` holds the value checks they share, ``files`` the YAML form.
"""

from klipjax.config.checks import ConfigError
from klipjax.config.run_table import (
    choice,
    concat,
    grid,
    hparams,
    loguniform,
    sample,
    uniform,
)
from klipjax.config.settings import CodePaths, Config, HParams

__all__ = [
    "CodePaths",
    "Config",
    "ConfigError",
    "HParams",
    "choice",
    "concat",
    "grid",
    "hparams",
    "loguniform",
    "sample",
    "uniform",
]
