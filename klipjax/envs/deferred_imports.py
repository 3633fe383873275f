"""Plotting modules that gymnax imports for rendering only, loaded on first use.

``import gymnax`` imports every environment, and with them seaborn, matplotlib and
pyplot (for ``render``): about two of the two and a half seconds the import takes
on a CPU, before any training. While gymnax is imported, those
modules are stand-ins that import the real module the first time one of their
attributes is used (by a renderer). Afterwards the import system knows nothing of
them: anyone else importing one of these modules gets the real one.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator

# matplotlib itself too: gymnax's Pong takes ``colors`` from it at import time
RENDER_ONLY = ("seaborn", "matplotlib", "matplotlib.pyplot", "matplotlib.colors")


class _LoadedOnUse(types.ModuleType):
    """A module's stand-in: the first attribute looked up imports the module."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _spec(name: str, found: dict):
    """``name``'s module spec, found without importing it or its parent package
    (whose spec, if deferred too, is in ``found``)."""
    parent, _, _ = name.rpartition(".")
    if not parent:
        return importlib.util.find_spec(name)
    parent_spec = found.get(parent) or importlib.util.find_spec(parent)
    locations = getattr(parent_spec, "submodule_search_locations", None)
    if not locations:
        return None
    return importlib.machinery.PathFinder.find_spec(name, locations)


@contextlib.contextmanager
def deferred(*names: str) -> Iterator[None]:
    """Inside, importing one of ``names`` (not imported yet) gives a stand-in."""
    stand_ins, specs = {}, {}
    for name in names:  # a package before its modules
        if name in sys.modules:
            continue
        spec = specs[name] = _spec(name, specs)
        parent, _, child = name.rpartition(".")
        if spec is None or (parent and parent not in sys.modules):
            continue
        stand_in = _LoadedOnUse(name)
        stand_in.__spec__ = spec  # the import system reads it, and must not load
        if spec.submodule_search_locations is not None:  # ``from a import b``
            stand_in.__path__ = spec.submodule_search_locations
        sys.modules[name] = stand_ins[name] = stand_in
        if parent:  # ``import a.b`` and ``from a import b`` look it up there
            setattr(sys.modules[parent], child, stand_in)
    try:
        yield
    finally:
        for name, stand_in in reversed(stand_ins.items()):
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            parent, _, child = name.rpartition(".")
            holder = stand_ins.get(parent) or sys.modules.get(parent)
            if parent and getattr(holder, child, None) is stand_in:
                delattr(holder, child)
