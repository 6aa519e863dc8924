"""How long the command line takes to answer: each command in a fresh interpreter, best of a few runs.

    python bench/bench_cli.py [--repeats 3]

Help, `list`, `--version` and argument errors import no deep-learning library; `train RECIPE --help` and a
misspelled recipe flag of a built-in recipe are answered from hf_recipes/flag_index.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--version"],
    ["--help"],
    ["list"],
    ["trian"],
    ["train", "--help"],
    ["train", "sentiment", "--help"],
    ["train", "sentiment", "--learning_rat", "1e-4"],
]


def seconds(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hf_recipes", *argv], cwd=REPO, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"| command | seconds (best of {args.repeats}) |\n|---|---|")
    for argv in COMMANDS:
        print(f"| hf-recipes {' '.join(argv)} | {seconds(argv, args.repeats):.2f} |", flush=True)


if __name__ == "__main__":
    main()
