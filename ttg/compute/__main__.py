"""``python -m ttg.compute PARENT REQ REP SHM SLOTS SLOT_BYTES ALGORITHM COST_US [GRID...]``: the compute child."""

import sys

from ttg.compute.child import main

main(sys.argv[1:])
