"""``python -m backends``: the ``backends`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
