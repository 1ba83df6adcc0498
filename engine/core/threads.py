"""Let idle OpenMP threads spin only briefly before they sleep, so a busy neighbour does not stall training.

torch's intra-op pool and the compiled kernels each run an OpenMP team (GNU libgomp); by default a
thread that finishes its share of a parallel loop spins for a while (300 000 turns) waiting for the
next one.  Alone that costs nothing, but when another program (or the window's viewport renders)
wants the same two cores, spinning threads burn the time slices their team-mates need to reach the
next barrier, and each step waits on a descheduled thread: training beside a two-thread torch
program ran at 14-18 % of its speed alone, against a fair 50 % (``python -m benchmarks.contention``).
Sleeping at once (OMP_WAIT_POLICY=PASSIVE) cured that but woke the threads for each of the hundreds
of small parallel loops of a cached portrait view or an edit step.  Measured the same day on the
same 2 cores (alone, then the share beside the neighbour): passive prior views 12.0 frames/s (105 %),
scene edits 11.7 steps/s (85 %), training 6.6 (70 %); SPIN_TURNS = 1000: 15.7 (63 %), 12.8 (69 %),
6.9 (62 %); 3000: 17.7 (40 %), 16.1 (43 %), 6.7 (49 %); 10 000: 21.3 (16 %), 18.4 (25 %), 8.4 (32 %).
1000 keeps every share above the 40 % target.  OpenMP reads these when its runtime loads, so they
are set before torch is imported; a spin count or a wait policy the user set is kept.
"""

from __future__ import annotations

import os
import sys


SPIN_TURNS = 1000
"""how long an idle libgomp thread spins before it sleeps (GOMP_SPINCOUNT; libgomp's default is 300 000)"""


def prefer_short_spinning() -> bool:
    """Ask OpenMP to spin briefly, then sleep; whether it was set in time for torch's own pool."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_TURNS))
    return "torch" not in sys.modules
