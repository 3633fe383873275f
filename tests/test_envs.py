"""Any gymnax environment trains: a short run per env id (all of them: slow)."""

import gymnax
import numpy as np
import pytest

from klipjax import config, sweep

SHORT = {"total_steps": 256, "num_envs": 2, "num_steps": 64, "epochs": 1,
         "minibatch_size": 64, "loss": ["ppo_clip", "kl_adaptive"]}


def short_run(env_id):
    cfg = config.resolve({"env": env_id, **SHORT})
    runner, metrics, _ = sweep.train(cfg)
    assert np.all(np.isfinite(metrics["policy_loss"])), env_id
    assert np.all(np.asarray(runner.diverged_at) == -1), env_id
    return runner


def test_image_observations_are_flattened_for_the_mlp():
    runner = short_run("Breakout-MinAtar")  # 10x10x4 observations, 3 actions
    assert runner.obs.shape == (2, 2, 400)
    assert runner.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"].shape == (2, 400, 64)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", gymnax.registered_envs)
def test_every_registered_env_trains(env_id):
    short_run(env_id)
