"""``python -m klipjax`` is the ``klipjax`` command."""

import sys

from klipjax.cli import main

sys.exit(main())
