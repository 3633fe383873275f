"""A built wheel works anywhere: installed into a fresh environment (its
dependencies borrowed from the project's), it finds its presets from a directory
outside the repository and runs the README's Python quickstart (slow: a cold
compile)."""

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done


def readme_quickstart() -> str:
    blocks = re.findall(
        r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL
    )
    return next(block for block in blocks if "kj.train(" in block)


class Installed(NamedTuple):
    python: Path  # the fresh environment's interpreter
    env_dir: Path
    work: Path  # a directory outside the repository
    env: dict


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel built and installed into a fresh environment."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
         "--no-build-isolation", "-w", str(dist)])  # fmt: skip
    (wheel,) = dist.glob("klipjax-*.whl")
    env_dir = tmp_path / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)])  # fmt: skip
    # Dependencies come from this environment: a path line, not a site dir, so its
    # editable install of klipjax stays invisible.
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    )
    Path(site.stdout.strip(), "deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "KLIPJAX_CACHE_DIR": "", "PYTHONPATH": ""}
    return Installed(python, env_dir, work, env)


def test_the_wheel_finds_its_modules_and_presets_outside_the_repo(installed):
    python, env_dir, work, env = installed
    where = run(
        [str(python), "-c", "import klipjax; print(klipjax.__file__)"],
        cwd=work,
        env=env,
    )
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout
    files_code = (
        "import importlib.resources as r; d = r.files('klipjax');"
        "print((d / 'py.typed').is_file(), len(list((d / 'presets').iterdir())))"
    )
    files = run([str(python), "-c", files_code], cwd=work, env=env)
    assert files.stdout.split() == ["True", "17"]
    preset_code = (
        "from klipjax.outputs import report;"
        "e = report.group_experiment('cartpole', True);"
        "print(e.config.env, len(e.hparams.seed))"
    )
    quick = run([str(python), "-c", preset_code], cwd=work, env=env)
    assert quick.stdout.split() == ["CartPole-v1", "8"]
    helped = run(
        [str(env_dir / "bin" / "klipjax"), "reproduce", "--help"], cwd=work, env=env
    )
    assert "preset groups" in helped.stdout


@pytest.mark.slow  # a cold compile in the fresh environment
def test_the_wheel_runs_the_readme_quickstart(installed):
    python, _, work, env = installed
    done = run([str(python), "-c", readme_quickstart()], cwd=work, env=env)
    assert "ppo_clip clip_eps=0.1" in done.stdout and "klip clip_eps=0.2" in done.stdout
    assert not (work / "runs").exists()  # nothing written without out_dir
