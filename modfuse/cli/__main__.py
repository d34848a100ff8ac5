"""``python -m modfuse.cli``: the ``modfuse`` command (e.g. under ``torchrun`` or ``srun``)."""

from __future__ import annotations

import sys

from modfuse.cli.entry import main

sys.exit(main())
