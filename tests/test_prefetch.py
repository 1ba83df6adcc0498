"""Examples made beside the training: inline in seed order, or by worker processes (same examples per seed),
and seeds interleaved across processes so a resumed or distributed run never repeats one."""

from __future__ import annotations

import itertools
import math
import time

from engine.core.prefetch import Prefetcher, Seeds


def test_seeds_interleave_across_processes_and_resume_where_they_stopped():
    ranks = [Seeds(0, rank, 2) for rank in range(2)]
    drawn = [[next(seeds) for _ in range(3)] for seeds in ranks]
    assert drawn == [[0, 2, 4], [1, 3, 5]]
    assert ranks[0].next == ranks[1].next == 6
    assert list(itertools.islice(Seeds(ranks[0].next, 1, 2), 2)) == [7, 9]


def test_without_workers_examples_are_made_on_demand_in_seed_order():
    made = Prefetcher(math.factorial, Seeds(3))
    assert made.take(2) == [6, 24]
    assert made.ready(1) == [120]  # inline, "ready" makes what is asked for


def test_workers_make_the_same_examples_and_hand_over_only_finished_ones():
    seeds = Seeds(3)
    made = Prefetcher(math.factorial, seeds, workers=2, ahead=4)
    try:
        assert made.take(3) == [6, 24, 120]  # in seed order, the same as inline
        deadline, arrived = time.monotonic() + 60, []
        while len(arrived) < 4 and time.monotonic() < deadline:
            arrived += made.ready(0)
            time.sleep(0.05)
        assert arrived[:4] == [math.factorial(n) for n in range(6, 10)]
        assert seeds.next > 9  # seeds given to workers count as used
    finally:
        made.close()
