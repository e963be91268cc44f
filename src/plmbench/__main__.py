"""`python -m plmbench <command> ...`: the same entry point as the `plmbench` script."""

import sys

from plmbench.cli import main

sys.exit(main())
