"""Does a run inside a sweep equal the same run trained alone, and at what cost?

Trains the default CartPole grid (20 runs, one program) twice, all runs at once
(the default) and ``--parallel-runs W`` at a time (default 1), then each chosen run
on its own (a 1-run program), and compares episode-return curves and final
parameters. A run's float rounding depends on how many runs a device advances at
once, so only a sweep advancing them one at a time is expected to match. Prints
both sweeps' speed after compiling.

Usage: .venv/bin/python scripts/sweep_vs_alone.py [--parallel-runs W] [RUN_INDEX ...]
"""

import argparse

import jax
import numpy as np

import klipjax as kj
from klipjax.config import files, run_table


def compare(sweep: kj.Results, alone: kj.Results, index: int) -> str:
    diff = max(
        float(np.max(np.abs(a[index] - b[0])))
        for a, b in zip(jax.tree.leaves(sweep.params), jax.tree.leaves(alone.params))
    )
    curve_a = sweep.metrics["episode_return"][index]
    curve_b = alone.metrics["episode_return"][0]
    if sweep.params_sha256[index] == alone.params_sha256[0]:
        return "identical parameters"
    first = int(np.argmax(~np.isclose(curve_a, curve_b, equal_nan=True)))
    same = np.array_equal(curve_a, curve_b, equal_nan=True)
    return f"largest parameter difference {diff:g}; return curve " + (
        "identical" if same else f"first differs at update {first}"
    )


def speed(results: kj.Results) -> str:
    timing = results.timing
    return (
        f"{timing['env_steps_per_second']:,.0f} env-steps/s after compile, "
        f"wall {timing['wall_seconds']:.1f} s"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel-runs", type=int, default=1, metavar="W")
    parser.add_argument("runs", type=int, nargs="*", default=[0, 7, 14])
    args = parser.parse_args()
    grid = files.load(None)
    config = grid.config
    together = kj.train(config, grid.hparams, progress=False)
    grouped = kj.train(
        config, grid.hparams, progress=False, parallel_runs=args.parallel_runs
    )
    print(f"all {run_table.num_runs(grid.hparams)} runs at once: {speed(together)}")
    print(f"{args.parallel_runs} at a time: {speed(grouped)}")
    for index in args.runs:
        run = run_table.run_values(grid.hparams, index)
        alone = kj.train(config, kj.hparams(**run), progress=False)
        label = f"run {index} ({run['loss']}, seed {run['seed']})"
        print(f"{label} vs alone, all at once: {compare(together, alone, index)}")
        print(
            f"{label} vs alone, {args.parallel_runs} at a time: "
            f"{compare(grouped, alone, index)}"
        )


if __name__ == "__main__":
    main()
