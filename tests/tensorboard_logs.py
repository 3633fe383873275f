"""Reading a TensorBoard log back, and what it should hold for a run of
``metrics.parquet``: shared by the tracking and evaluation tests."""

import math
from pathlib import Path

import pandas as pd

METRIC_COLUMNS_SKIPPED = ("run", "update", "loss", "seed", "env_steps")


def read_tensorboard(root: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run directory: {tag: [(step, value)]}}`` through TensorBoard's reader."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    runs = {}
    for events in sorted(root.rglob("events.out.tfevents.*")):
        run = events.parent.relative_to(root).as_posix()
        if run in runs:
            continue
        reader = ea.EventAccumulator(str(events.parent), size_guidance={ea.SCALARS: 0})
        reader.Reload()
        runs[run] = {
            tag: [(event.step, event.value) for event in reader.Scalars(tag)]
            for tag in reader.Tags()["scalars"]
        }
    return runs


def expected_scalars(frame: pd.DataFrame, run: int) -> dict[str, list]:
    """The parquet rows of one run as TensorBoard should hold them."""
    rows = frame[frame["run"] == run]
    steps = rows["env_steps"].astype(int).tolist()
    scalars = {
        column: [
            (step, value)
            for step, value in zip(steps, rows[column].tolist())
            if not math.isnan(value)
        ]
        for column in frame.columns
        if column not in METRIC_COLUMNS_SKIPPED
    }
    return {column: values for column, values in scalars.items() if values}
