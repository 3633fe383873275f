"""klipjax gives JAX's CPU backend one device per core, so that a CPU sweep's runs
spread over every core; a count the user chose is kept. Each case runs in a fresh
process: the count is fixed once JAX's backends start."""

import json
import os
import subprocess
import sys
import textwrap

from klipjax.engine import cpu_devices

PINS = ("KLIPJAX_CPU_DEVICES", "JAX_NUM_CPU_DEVICES", "XLA_FLAGS")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose environment has none of the device-count
    settings the suite pins, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    clean.update(env, KLIPJAX_CACHE_DIR="")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=clean,
    )


def last_json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_run_axis_spans_one_cpu_device_per_core():
    done = run_python(
        """
        import json
        import jax
        import klipjax as kj
        from klipjax.engine import memory, placement

        kj.Config()  # what a user builds first: the CPU devices are set by now
        layout = placement.place(3)
        print(json.dumps({
            "devices": jax.device_count(),
            "platforms": sorted({d.platform for d in jax.devices()}),
            "mesh": layout.mesh.size,
            "padded_runs": layout.padded_runs,
            "share": memory.available_bytes() * jax.device_count()
            / memory._host_available_bytes(),
        }))
        """
    )
    seen = last_json(done)
    cores = cpu_devices.usable_cores()
    assert seen["platforms"] == ["cpu"] and seen["devices"] == cores
    # A sweep's runs lie over all of them, padded to a multiple of their count.
    assert seen["mesh"] == cores and seen["padded_runs"] == -(-3 // cores) * cores
    # The memory budget of a device is its share of the host's memory.
    assert 0.9 < seen["share"] < 1.1


COUNT = """
import jax
import klipjax.envs
print(jax.device_count())
"""


def test_a_count_the_user_chose_is_kept():
    assert last_json(run_python(COUNT, KLIPJAX_CPU_DEVICES="3")) == 3
    assert last_json(run_python(COUNT, JAX_NUM_CPU_DEVICES="3")) == 3
    flags = "--xla_force_host_platform_device_count=4"
    assert last_json(run_python(COUNT, XLA_FLAGS=flags, KLIPJAX_CPU_DEVICES="3")) == 4


def test_asking_whether_this_is_the_main_process_starts_no_backend():
    # `klipjax reproduce` with every group complete asks, then builds its report
    code = "from klipjax.engine import distributed\nassert distributed.is_main()\n"
    done = run_python(code + COUNT, KLIPJAX_CPU_DEVICES="3")
    assert last_json(done) == 3 and "before klipjax could give it" not in done.stderr


def test_importing_klipjax_for_its_losses_leaves_jax_alone():
    done = run_python(
        """
        import jax, jax.numpy as jnp
        import klipjax, klipjax.losses, klipjax.token_losses
        x = jnp.zeros(3)
        klipjax.losses.klip(x, x, x + 1.0, clip_eps=0.2)
        print(jax.device_count())
        """
    )
    assert last_json(done) == 1


def test_a_backend_started_before_klipjax_keeps_its_device_and_says_so():
    done = run_python(
        """
        import jax, jax.numpy as jnp
        jnp.zeros(1)
        import klipjax.envs
        print(jax.device_count())
        """,
        KLIPJAX_CPU_DEVICES="2",
    )
    assert last_json(done) == 1
    assert "started with 1 device(s) before klipjax could give it 2" in done.stderr


def test_a_bad_count_is_one_clear_error():
    done = run_python(
        "from klipjax.cli import main; raise SystemExit(main(['train']))",
        KLIPJAX_CPU_DEVICES="zero",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: KLIPJAX_CPU_DEVICES='zero': expected a whole number >= 1"
    )
