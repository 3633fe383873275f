"""``python -m klipjax`` is the ``klipjax`` command."""

from klipjax.cli import run

run()
