"""`python -m evo1_bringup.cli ...`: the `evo1` tool without its console script."""

import sys

from . import main

sys.exit(main())
