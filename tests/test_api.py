"""The Python front door: ``klipjax.train`` restores what it touches, stops cleanly
on a signal and resumes bit-identically; ``sample`` is one program; the trainer
refuses runs it was not compiled for; the update's small rules."""

import os
import re
import signal

import jax.numpy as jnp
import numpy as np
import pytest

import klipjax as kj
from klipjax.core import update_rules as rules
from klipjax.engine import sweep
from tests.test_trainer import count_traces

TINY = kj.Config(total_steps=2048, num_steps=64, epochs=2)  # 8 updates


def handlers():
    return [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]


def test_handlers_are_restored_when_train_raises(monkeypatch):
    before = handlers()

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(sweep, "run", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        kj.train(TINY, kj.hparams(), progress=False)
    assert handlers() == before


def test_two_calls_a_signal_stop_and_a_bit_identical_resume(
    monkeypatch, tmp_path, capsys
):
    table = kj.grid(loss=["ppo_clip", "kl_adaptive"], seeds=2)
    before = handlers()
    reference = kj.train(TINY, table, progress=True, chunk_updates=2)
    assert handlers() == before and reference.complete
    real_run = sweep.run

    def interrupted_after_first_chunk(program, on_chunk, **kwargs):
        def on_chunk_then_signal(report, runner, metrics):
            if report.chunks_done == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return on_chunk(report, runner, metrics)

        return real_run(program, on_chunk_then_signal, **kwargs)

    monkeypatch.setattr(sweep, "run", interrupted_after_first_chunk)
    out = tmp_path / "run"
    # a second call in the same process, stopped by SIGINT after its first chunk
    stopped = kj.train(TINY, table, out_dir=out, progress=False, chunk_updates=2)
    assert handlers() == before
    assert stopped.status == ("stopped",) * 4 and not stopped.complete
    assert stopped.stopped_by == signal.SIGINT
    assert stopped.metrics["episode_return"].shape == (4, 2)
    assert kj.load(out).status == ("stopped",) * 4
    monkeypatch.setattr(sweep, "run", real_run)

    with pytest.raises(kj.ConfigError, match="already holds a run"):
        kj.train(TINY, table, out_dir=out)
    with pytest.raises(kj.ConfigError, match="another run table"):
        kj.train(TINY, kj.grid(seeds=4), out_dir=out, resume=True)
    resumed = kj.train(TINY, table, out_dir=out, resume=True, progress=False)
    assert resumed.complete and resumed.params_sha256 == reference.params_sha256
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    assert capsys.readouterr().out == ""  # the progress bar is on stderr


def test_the_bar_moves_after_one_update_and_times_only_the_training(capsys):
    kj.train(TINY, kj.grid(seeds=2), progress=True, chunk_updates=4)
    err = capsys.readouterr().err.replace("\r", "\n")
    shown = re.findall(r"(compiling|training): +\d+%\|[^|]*\| (\d)/8 \[([^\]]*)\]", err)
    assert shown[0][:2] == ("compiling", "0")
    # One update after compiling, before the first chunk of 4 is over; that move
    # feeds no rate (the compile's seconds would have made it look ~1000x slow).
    assert shown[1][:2] == ("training", "1") and shown[1][2].endswith("?update/s")
    assert shown[-1][:2] == ("training", "8")


def test_a_random_search_is_one_program(monkeypatch):
    def draw():
        return kj.sample(
            3,
            seed=7,
            seeds=2,
            lr=kj.loguniform(1e-4, 1e-2),
            clip_eps=kj.uniform(0.1, 0.3),
            loss=kj.choice(["ppo_clip", "klip", "kl_fixed"]),
            gamma=0.98,
        )

    table = draw()
    assert len(table.seed) == 6 and list(table.seed) == [0, 1] * 3
    lr = table.lr[::2]
    assert np.all((lr >= 1e-4) & (lr < 1e-2)) and len(set(lr)) == 3
    assert np.all((table.clip_eps >= 0.1) & (table.clip_eps < 0.3))
    np.testing.assert_array_equal(table.gamma, np.float32(0.98))
    np.testing.assert_array_equal(table.lr[::2], table.lr[1::2])  # seeds share a draw
    again = draw()  # the same draw for the same seed
    assert all(np.array_equal(a, b) for a, b in zip(table, again))

    traces = count_traces(monkeypatch)
    results = kj.train(TINY, table, progress=False, chunk_updates=4)
    assert len(traces) == 1  # one trace for 6 runs of 3 variants, 2 chunks
    assert results.varying[:2] == ("lr", "clip_eps")
    assert set(results.frame()["loss"]) <= {"ppo_clip", "klip", "kl_fixed"}


def test_loguniform_spreads_over_decades():
    table = kj.sample(400, seed=0, lr=kj.loguniform(1e-5, 1e-1))
    decades = np.floor(np.log10(table.lr)).astype(int)
    counts = np.bincount(decades + 5, minlength=4)
    assert len(counts) == 4 and counts.min() > 60  # about 100 per decade


def test_hparams_defaults_are_the_class_defaults():
    one = kj.hparams()
    for field, default in kj.HParams._field_defaults.items():
        assert np.float32(getattr(one, field)) == np.float32(default), field
    assert kj.hparams(loss="klip", kl_estimator="k3").kl_estimator_id == 2


def test_the_trainer_refuses_runs_outside_its_code_paths():
    trainer = kj.make_trainer(TINY, kj.CodePaths(losses=("ppo_clip",)))
    with pytest.raises(kj.ConfigError, match="compiled for"):
        kj.train(TINY, kj.hparams(loss="klip"), trainer=trainer)
    program = sweep.build(TINY, kj.grid(seeds=2), trainer=trainer)  # a covered table
    assert program.hparams.loss_id.tolist() == [0, 0]


def test_adapt_beta_doubles_halves_or_holds():
    target = 0.02
    kl = jnp.asarray([0.031, 0.0299, 0.02, 0.0134, 0.013])
    np.testing.assert_allclose(
        rules.adapt_beta(1.0, kl, target), [2.0, 1.0, 1.0, 1.0, 0.5]
    )


def test_explained_variance():
    targets = jnp.asarray([1.0, 2.0, 3.0, 4.0])
    assert rules.explained_variance(targets, targets) == 1.0
    # a constant critic at the mean explains nothing
    assert rules.explained_variance(jnp.full(4, 2.5), targets) == 0.0
    # residual variance 1.25 / 1.25 plus a shift: var(t - v) with v = t - 1 is 0
    assert rules.explained_variance(targets - 1.0, targets) == 1.0


def test_all_finite_and_the_episode_tally():
    assert bool(rules.all_finite({"a": jnp.ones(3), "b": [jnp.zeros(2)]}))
    assert not bool(rules.all_finite({"a": jnp.asarray([1.0, jnp.nan])}))
    assert not bool(rules.all_finite([jnp.asarray(jnp.inf)]))
    # Leaves of several dtypes and shapes, the non-finite one anywhere among them.
    mixed = {
        "w": jnp.ones((2, 3)),
        "n": jnp.arange(4),
        "h": jnp.asarray([1.0, 2.0], jnp.bfloat16),
        "s": jnp.asarray(0.5),
    }
    assert bool(rules.all_finite(mixed))
    assert not bool(
        rules.all_finite({**mixed, "h": jnp.asarray([1.0, -jnp.inf], jnp.bfloat16)})
    )
    assert not bool(rules.all_finite({**mixed, "s": jnp.asarray(jnp.nan)}))
    assert bool(rules.all_finite({}))
    tally = rules.EpisodeTally.zero()
    assert np.isnan(tally.mean_return())
    tally = tally.add(
        jnp.asarray([True, False, True]),
        jnp.asarray([10.0, 99.0, 20.0]),
        jnp.asarray([5.0, 9.0, 7.0]),
    )
    tally = tally.add(
        jnp.asarray([False, True, False]),
        jnp.asarray([0.0, 30.0, 0.0]),
        jnp.asarray([1.0, 3.0, 1.0]),
    )
    assert float(tally.count) == 3.0
    assert float(tally.mean_return()) == 20.0 and float(tally.mean_length()) == 5.0


def test_annealed_lr_and_advantage_normalisation():
    lr = rules.annealed_lr(3e-4, 1.0, jnp.arange(4), 4)
    np.testing.assert_allclose(lr, 3e-4 * np.asarray([1.0, 0.75, 0.5, 0.25]), rtol=1e-6)
    np.testing.assert_allclose(rules.annealed_lr(3e-4, 0.0, 3, 4), 3e-4)
    normed = rules.normalize_advantages(jnp.asarray([1.0, 2.0, 3.0, 6.0]))
    assert abs(float(normed.mean())) < 1e-6 and abs(float(normed.std()) - 1) < 1e-6
