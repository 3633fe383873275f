"""Does a run inside a sweep equal the same run trained alone?

Trains the default CartPole grid (20 runs, one program) and then each chosen run on
its own (a 1-run program), and compares episode-return curves and final parameters.
Usage: .venv/bin/python scripts/sweep_vs_alone.py [RUN_INDEX ...]
"""

import sys

import jax
import numpy as np

import klipjax as kj
from klipjax.config import files, run_table


def main(indices):
    grid = files.load(None)
    grid_results = kj.train(grid.config, grid.hparams)
    grid_params, grid_metrics = grid_results.params, grid_results.metrics
    for index in indices:
        run = run_table.run_values(grid.hparams, index)
        alone = kj.train(grid.config, kj.hparams(**run))
        params, metrics = alone.params, alone.metrics
        diff = max(
            float(np.max(np.abs(a[index] - b[0])))
            for a, b in zip(jax.tree.leaves(grid_params), jax.tree.leaves(params))
        )
        curve_a = grid_metrics["episode_return"][index]
        curve_b = metrics["episode_return"][0]
        same = np.array_equal(curve_a, curve_b, equal_nan=True)
        first = (
            None
            if same
            else int(np.argmax(~np.isclose(curve_a, curve_b, equal_nan=True)))
        )
        print(
            f"run {index} ({run['loss']}, seed {run['seed']}): identical return curve: "
            f"{same}{'' if same else f' (first difference at update {first})'}; "
            f"largest parameter difference {diff:g}"
        )


if __name__ == "__main__":
    main([int(i) for i in sys.argv[1:]] or [0, 7, 14])
