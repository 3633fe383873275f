"""Test session settings."""

import atexit
import os
import shutil
import tempfile

# Tests never write to the user's compilation cache (test_compile_cache opts in to
# its own). They share one for the session instead: many tests compile the same
# small programs, and each cached one is a compile not repeated. The pytest process
# makes it; its workers (make test runs one per core) inherit it.
SHARED = "KLIPJAX_TEST_SESSION_CACHE"
if not os.environ.get(SHARED):
    os.environ[SHARED] = tempfile.mkdtemp(prefix="klipjax-test-xla-")
    atexit.register(shutil.rmtree, os.environ[SHARED], ignore_errors=True)
os.environ["KLIPJAX_CACHE_DIR"] = os.environ[SHARED]

# One CPU device, as JAX has by default: the suite's numbers do not depend on the
# machine's core count, and its worker processes do not each spread over every
# core. test_cpu_devices checks klipjax's own default in fresh processes.
os.environ["KLIPJAX_CPU_DEVICES"] = "1"
