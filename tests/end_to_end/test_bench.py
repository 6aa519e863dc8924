"""The bench scripts run against the package as it is (they call its functions directly, so a change there can break
them where no other test looks): bench_scale at its smallest sizes, every recipe, one process per size."""

import subprocess
import sys

import pytest

from tests.conftest import REPO, needs_shared


@pytest.mark.slow
@needs_shared
def test_bench_scale_measures_every_recipe_at_a_small_size():
    done = subprocess.run([sys.executable, "bench/bench_scale.py", "--sizes", "1k", "1MB", "--no_train"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("1k ", "1MB "))]
    assert [row[0] for row in rows] == ["1k", "1k", "1MB"]  # sentiment, instruct, lyrics
    for row in rows:
        peak_rss = float(row[-1])
        assert 100 < peak_rss < 4096, row
