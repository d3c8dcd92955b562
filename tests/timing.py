"""Test timing in multiples of one unit, scaled by SPARK_TEST_TIME_SCALE on slow machines.

Speed is judged in perf/ benchmarks, never in tests: these are generous limits that only
catch hangs.
"""

import os

SCALE = float(os.environ.get("SPARK_TEST_TIME_SCALE", "1"))


def seconds(n: float) -> float:
    return n * SCALE
