"""The bench scripts run against the package as it is (they call its functions directly, so a change there can break
them where no other test looks): bench_scale at its smallest sizes, every recipe, one process per size; bench_peers
without TRL."""

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


@pytest.mark.slow
@needs_shared
def test_bench_peers_scores_each_contender_on_the_held_out_records():
    """The recipe and the examples' Trainer (TRL is a bench extra, absent here), two seeds, a few steps: each
    contender's mean row, and a held-out loss per seed whose mean is the row's."""
    done = subprocess.run([sys.executable, "bench/bench_peers.py", "--recipe", "instruct", "--steps", "2",
                           "--batch_size", "2", "--max_length", "64", "--records", "16", "--seeds", "1", "2",
                           "--contenders", "recipe", "example"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("recipe ", "example "))}
    per_seed = {line.split(":")[0].strip(): [float(v) for v in line.split("per seed")[1].split(",")]
                for line in lines if "held-out per seed" in line}
    assert set(rows) == set(per_seed) == {"recipe", "example"}
    for contender, losses in per_seed.items():
        assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
        assert float(rows[contender][7]) == pytest.approx(sum(losses) / 2, abs=1e-4)
