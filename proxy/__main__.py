"""``python -m proxy`` is the ``tagrelay`` command."""

import sys

from .cli import main

sys.exit(main())
