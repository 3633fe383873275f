"""Where a sweep's runs live: one run axis over every device of every process.

One mesh axis, ``runs``, spans ``jax.devices()`` (all processes' devices). Each
device holds an equal slice of the runs and trains it with a per-device body under
``shard_map``, so the compiled programs contain no collectives and a run's numbers
do not depend on which device or process trains it. A table whose run count does
not divide over the devices is padded with copies of its last run, trained and
then dropped: results hold exactly the table's runs, and no process trains more
than its own devices' share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from klipjax.config.settings import HParams
from klipjax.engine import distributed

RUN_AXIS = "runs"


class Placement(NamedTuple):
    """The run axis laid over the devices: ``padded_runs`` rows, the first
    ``num_runs`` of them the table's."""

    mesh: jax.sharding.Mesh
    num_runs: int
    padded_runs: int  # a multiple of the device count

    @property
    def sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(RUN_AXIS))

    @property
    def runs_per_device(self) -> int:
        return self.padded_runs // self.mesh.size


def place(num_runs: int) -> Placement:
    """The runs over every device of every process."""
    devices = jax.devices()
    mesh = jax.make_mesh(
        (len(devices),),
        (RUN_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices,
    )
    padded = -(-num_runs // len(devices)) * len(devices)
    return Placement(mesh=mesh, num_runs=num_runs, padded_runs=padded)


def padded_table(table: HParams, placement: Placement) -> HParams:
    """``table`` (numpy ``[runs]``) with copies of its last run appended up to
    ``placement.padded_runs``."""
    extra = placement.padded_runs - placement.num_runs
    return HParams(
        *(np.concatenate([column, np.repeat(column[-1:], extra)]) for column in table)
    )


def _from_host(value: Any, sharding: NamedSharding) -> jax.Array:
    """A host value (the same on every process) as a global array laid out by
    ``sharding``; each process sends only its own devices' pieces."""
    value = np.asarray(value)
    return jax.make_array_from_callback(
        value.shape, sharding, lambda index: value[index]
    )


def put(tree: Any, placement: Placement) -> Any:
    """Host arrays ``[padded_runs, ...]`` (the same on every process) as global
    arrays sharded over the run axis; each process sends only its own slices."""
    return jax.tree.map(lambda leaf: _from_host(leaf, placement.sharding), tree)


def per_device(
    fn: Callable, mesh: jax.sharding.Mesh, shared: tuple[bool, ...] | None = None
) -> Callable:
    """``fn`` (over a device's slice of runs, every argument and result ``[runs,
    ...]``) applied to the whole run axis, each device on its own slice. With
    ``shared``, one flag per argument: those flagged are the same on every device
    (``put_shared``), not over the run axis."""
    spec = PartitionSpec(RUN_AXIS)
    in_specs = spec
    if shared is not None:
        in_specs = tuple(PartitionSpec() if flag else spec for flag in shared)
    # No collectives inside, so nothing for the varying-axes checks to guard; they
    # would ask every scan carry built from constants to be cast to "varying".
    return jax.shard_map(
        fn, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False
    )


def put_shared(value: Any, placement: Placement) -> jax.Array:
    """A host value (the same on every process) as a global array that every device
    holds whole."""
    return _from_host(value, NamedSharding(placement.mesh, PartitionSpec()))


def to_host(tree: Any, placement: Placement) -> Any:
    """The table's runs of a ``[padded_runs, ...]`` tree, as numpy on every
    process (the padding dropped)."""
    return jax.tree.map(lambda x: x[: placement.num_runs], distributed.to_host(tree))


__all__ = [
    "RUN_AXIS",
    "Placement",
    "padded_table",
    "per_device",
    "place",
    "put",
    "put_shared",
    "to_host",
]
