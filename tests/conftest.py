"""Test session settings."""

import os

# Tests never write to the user's compilation cache; test_compile_cache opts in.
os.environ["KLIPJAX_CACHE_DIR"] = ""
