"""Any gymnax environment trains: a short run per env id (all of them: slow)."""

import gymnax
import numpy as np
import pytest

from klipjax import envs
from klipjax.cli import main
from tests.sweeps import experiment, run

SHORT = {
    "total_steps": 256,
    "num_envs": 2,
    "num_steps": 64,
    "epochs": 1,
    "minibatch_size": 64,
    "loss": ["ppo_clip", "kl_adaptive"],
}


def short_run(env_id):
    cfg = experiment({"env": env_id, **SHORT})
    runner, metrics, _ = run(cfg)
    assert np.all(np.isfinite(metrics["policy_loss"])), env_id
    assert np.all(np.asarray(runner.diverged_at) == -1), env_id
    return runner


def test_image_observations_are_flattened_for_the_mlp():
    runner = short_run("Breakout-MinAtar")  # 10x10x4 observations, 3 actions
    assert runner.obs.shape == (2, 2, 400)
    assert runner.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"].shape == (
        2,
        400,
        64,
    )


# gymnax builds MNISTBandit by downloading MNIST: no network, no environment.
NEEDS_DOWNLOAD = {"MNISTBandit-bsuite"}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", sorted(set(gymnax.registered_envs) - NEEDS_DOWNLOAD))
def test_every_registered_env_trains(env_id):
    short_run(env_id)


def test_an_env_that_cannot_be_built_is_a_clean_error(capsys, tmp_path):
    def broken():
        raise OSError("no network")

    envs.register("Broken-v0", broken)
    with pytest.raises(envs.EnvError, match="Broken-v0.*OSError: no network"):
        envs.make("Broken-v0")
    assert (
        main(
            [
                "train",
                "--set",
                "env=Broken-v0",
                "--set",
                "total_steps=512",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    assert "could not be built" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # no empty run directory is left
