"""Plotting modules that gymnax imports for rendering only, loaded on first use.

``import gymnax`` imports every environment, and with them seaborn and
matplotlib.pyplot (for ``render``): about two of the two and a half seconds the
import takes on a CPU, before any training. While gymnax is imported, those
modules are stand-ins that import the real module the first time one of their
attributes is used (by a renderer). Afterwards the import system knows nothing of
them: anyone else importing seaborn or pyplot gets the real module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator

RENDER_ONLY = ("seaborn", "matplotlib.pyplot")


class _LoadedOnUse(types.ModuleType):
    """A module's stand-in: the first attribute looked up imports the module."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


@contextlib.contextmanager
def deferred(*names: str) -> Iterator[None]:
    """Inside, importing one of ``names`` (not imported yet) gives a stand-in."""
    stand_ins = {}
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)  # imports a parent package only
        if spec is None:
            continue
        stand_in = _LoadedOnUse(name)
        stand_in.__spec__ = spec  # the import system reads it, and must not load
        sys.modules[name] = stand_ins[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stand_in)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent and getattr(sys.modules[parent], child, None) is stand_in:
                delattr(sys.modules[parent], child)
