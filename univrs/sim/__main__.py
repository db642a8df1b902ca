"""``python -m univrs.sim``: see univrs/sim/cli.py."""

import sys

from univrs.sim.cli import main

sys.exit(main())
