"""A chord of many members: time from the call to its callback's start."""

from __future__ import annotations

import time

from benchmarks.app import chord_done, member
from benchmarks.harness import Bench, Row, scenario


@scenario(order=60)
def chord(bench: Bench) -> list[Row]:
    """Chord of N members: time to callback (s)"""
    try:
        from pgtasks.canvas import chord as make_chord
    except ImportError:
        return [Row("chord", "time to callback", "not available",
                    note="this pgtasks has no canvas chord")]
    size = bench.sizes.chord_size
    with bench.workers() as workers:
        # Warm-up: a small chord, so that the timed one meets a ready worker.
        make_chord(member.s(i) for i in range(3))(chord_done.s("warm", 0, time.time()))
        bench.wait_for_marks("warm", 1, workers, timeout=60, label="warm-up chord")
        t0 = time.time()
        make_chord(member.s(i) for i in range(size))(chord_done.s("chord", 0, t0))
        bench.wait_for_marks("chord", 1, workers, timeout=max(60.0, size / 50))
        bench.wait_until_finished()
    (enqueued, started), = bench.marks.get("chord").values()
    seconds = round(started - enqueued, 3)
    return [Row(f"chord of {size:,}", "time to callback", seconds, "s",
                note=f"call -> callback start, {bench.worker_setup.describe()}")]
