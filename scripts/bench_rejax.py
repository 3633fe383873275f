"""rejax's PPO on the paper's CartPole preset, for ``scripts/bench.py``.

Runs in its own virtual environment (rejax from PyPI); prints one JSON line. The
hyperparameters match klipjax's preset: 4 envs x 128 steps, 10 epochs of 8
minibatches (64 samples), Adam 3e-4, grad clip 0.5, clip 0.2, vf 0.5, entropy 0,
tanh 64-64 actor and critic. Evaluation is switched off so only training is timed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from gymnax.wrappers import LegacyStepAPIWrapper
from rejax import PPO


class LegacyStep(LegacyStepAPIWrapper):
    """gymnax 1.x's five-value step wrapper, made deep-copyable for rejax's config."""

    def __deepcopy__(self, memo):
        return self


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    batch = 4 * 128
    algo = PPO.create(
        env="CartPole-v1",
        num_envs=4,
        num_steps=128,
        num_epochs=10,
        num_minibatches=batch // 64,
        learning_rate=3e-4,
        max_grad_norm=0.5,
        total_timesteps=args.updates * batch,
        eval_freq=args.updates * batch,
        skip_initial_evaluation=True,
        gamma=0.99,
        gae_lambda=0.95,
        clip_eps=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        agent_kwargs={"activation": "tanh"},
    )
    algo = algo.replace(
        env=LegacyStep(algo.env), eval_callback=lambda algo, ts, rng: jnp.zeros(())
    )
    keys = jax.random.split(jax.random.PRNGKey(0), args.runs)
    start = time.perf_counter()
    train = jax.jit(jax.vmap(algo.train)).lower(keys).compile()
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(train(keys))
        times.append(time.perf_counter() - start)
    execute = statistics.median(times)
    print(
        json.dumps(
            {
                "system": "rejax",
                "version": importlib.metadata.version("rejax"),
                "jax": jax.__version__,
                "runs": args.runs,
                "updates": args.updates,
                "compile_s": compile_seconds,
                "execute_s": execute,
                "execute_all_s": times,
                "env_steps_per_s": args.runs * args.updates * batch / execute,
                "peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
