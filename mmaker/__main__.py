"""``python -m mmaker``: the same as the ``mmaker`` command."""

import sys

from mmaker.cli import main

sys.exit(main())
