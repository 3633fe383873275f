"""The persistent compilation cache: a second identical invocation loads its program."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--set", "total_steps=2048", "--set", "epochs=1", "--set", "seeds=2"]


def train(out, cache):
    env = {**os.environ, "KLIPJAX_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-m", "klipjax", "train", *ARGS, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "summary.json").read_text())


# make test keeps test_resume's SIGTERM case: its resuming process loads the programs
# an earlier process compiled from the cache and ends bit-identical to it.
@pytest.mark.slow
def test_second_invocation_hits_the_cache_with_identical_results(tmp_path):
    cache = tmp_path / "cache"
    first = train(tmp_path / "a", cache)
    assert first["compile_cache_hits"] == 0
    assert any(cache.iterdir())  # the programs were written
    second = train(tmp_path / "b", cache)
    assert second["compile_cache_hits"] >= 1
    assert [r["params_sha256"] for r in second["runs"]] == [
        r["params_sha256"] for r in first["runs"]
    ]


def test_empty_cache_dir_turns_it_off(monkeypatch):
    from klipjax.engine import compile_cache

    monkeypatch.setenv("KLIPJAX_CACHE_DIR", "")
    assert compile_cache.enable() is None
    monkeypatch.setenv("KLIPJAX_CACHE_DIR", "/some/dir")
    monkeypatch.setattr(compile_cache, "_listening", [True])  # no second listener
    import jax

    before = jax.config.jax_compilation_cache_dir
    try:
        assert compile_cache.enable() == "/some/dir"
        assert jax.config.jax_compilation_cache_dir == "/some/dir"
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
