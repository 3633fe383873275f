"""Files written so that a crash leaves the old file or the new one, never a stub.

Every writer writes a temporary file next to the target, fsyncs it and renames it
over the target. numpy values become plain Python on the way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path`` with it.

    The temporary file sits in the same directory (so the final rename is atomic)
    and keeps ``path``'s suffix (so writers that infer the format still work). It
    is fsynced before the rename, and removed if the body raises, leaving any old
    file at ``path`` untouched. Missing parent directories are created.

    Args:
        path: The file to produce.

    Yields:
        The temporary path; it exists, empty, when the body starts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")
    # O_EXCL claims the name; creating it through os.open keeps the umask's mode
    # rather than mkstemp's 0600.
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable; only POSIX can open a directory for this."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Atomically writes bytes, or a str as UTF-8, to ``path``; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(payload)
    return Path(path)


def to_builtin(obj: Any, *, nonfinite_to_none: bool = False) -> Any:
    """Converts numpy scalars and arrays, tuples and mappings to plain Python.

    Args:
        obj: A nest of dicts, lists, tuples, numpy values and Python scalars.
        nonfinite_to_none: Replace NaN and +-inf floats by None (strict JSON).

    Returns:
        The same nest made of dict, list, and Python scalars; anything else is
        passed through unchanged for the serialiser to accept or reject.
    """

    def convert(value: Any) -> Any:
        return to_builtin(value, nonfinite_to_none=nonfinite_to_none)

    if isinstance(obj, Mapping):
        # Keys stay hashable: only numpy scalars are unwrapped, tuples stay tuples.
        return {
            key.item() if isinstance(key, np.generic) else key: convert(value)
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [convert(value) for value in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return convert(obj.tolist())
    if isinstance(obj, float) and nonfinite_to_none and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically writes strict JSON: NaN and inf become null, numpy becomes Python.

    Raises:
        TypeError: If ``obj`` holds something JSON cannot represent; the file at
            ``path`` is then left as it was.
    """
    # Serialising before touching the disk means a failure cannot leave a stub.
    text = json.dumps(
        to_builtin(obj, nonfinite_to_none=True), indent=2, allow_nan=False
    )
    return write_atomic(path, text + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically writes YAML with ``yaml.safe_dump``, keeping key order."""
    text = yaml.safe_dump(to_builtin(obj), sort_keys=False, allow_unicode=True)
    return write_atomic(path, text)


def write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Atomically writes ``frame`` (without its index) as Parquet via pyarrow."""
    with atomic_path(path) as temp:
        frame.to_parquet(temp, engine="pyarrow", index=False)
    return Path(path)
