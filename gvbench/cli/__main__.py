"""``python -m gvbench.cli``: the ``gvbench`` command."""

import sys

from gvbench.cli import main

sys.exit(main())
