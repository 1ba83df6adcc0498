"""Let idle OpenMP threads sleep instead of spinning, so a busy neighbour does not stall training.

torch's intra-op pool and the compiled kernels each run an OpenMP team; by default a thread that
finishes its share of a parallel loop spins for a while waiting for the next one.  Alone that
costs nothing, but when another program (or the window's viewport renders) wants the same two
cores, spinning threads burn the time slices their team-mates need to reach the next barrier,
and each step waits on a descheduled thread: training beside a two-thread torch program ran at
14-18 % of its speed alone, against a fair 50 %.  Passive waiting measured 53 % there and the
same speed alone (``python -m benchmarks.contention``).  OpenMP reads the policy when its runtime
loads, so it is set before torch is imported; a value the user set is kept.
"""

from __future__ import annotations

import os
import sys


def prefer_passive_waiting() -> bool:
    """Ask OpenMP for passive waiting; whether it was set in time for torch's own pool."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules
