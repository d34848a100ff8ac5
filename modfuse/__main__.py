"""``python -m modfuse``: the ``modfuse`` command."""

from __future__ import annotations

import sys

from modfuse.cli.entry import main

sys.exit(main())
