"""Start-up of a job in its own process against a job forked from the warm-start server
(benchmark/warm.py), measured in the same run.

    python -m benchmark.perf.warm [--repeats 5] [--config config/ci.yaml]

Each repeat runs ``python -m benchmark models`` (it imports torch, torchvision, timm,
open_clip, transformers and peft, and builds every tiny preset: what a model job does before
its first step) once in its own process and once as ``python -m benchmark.warm models``
through a server, alternating; it prints the median seconds of each and their ratio, and
checks that both print the same listing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark.warm import SOCKET_ENV, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]


def _seconds(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, check=True)
    return time.perf_counter() - start, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default="config/ci.yaml")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(SOCKET_ENV, None)
    with tempfile.TemporaryDirectory() as folder:
        ready = time.perf_counter()
        server = start_server(str(Path(folder) / "warm.log"), str(REPO))
        while not os.path.exists(os.environ[SOCKET_ENV]):
            time.sleep(0.05)
        ready = time.perf_counter() - ready
        warm_env = {**env, SOCKET_ENV: os.environ[SOCKET_ENV]}
        cold, warm = [], []
        try:
            for _ in range(args.repeats):
                seconds, cold_out = _seconds([sys.executable, "-m", "benchmark", "models", "--config", args.config], env)
                cold.append(seconds)
                seconds, warm_out = _seconds([sys.executable, "-m", "benchmark.warm", "models", "--config", args.config],
                                             warm_env)
                warm.append(seconds)
                assert warm_out == cold_out, "the forked job printed another listing"
            forked = (Path(folder) / "warm.log").read_text().count("pid ")
        finally:
            stop_server(server)
    assert forked == args.repeats, f"{forked} of {args.repeats} warm runs were forked from the server"
    print(f"server ready after {ready:.1f} s (imports, once per workflow run)")
    print("| job start-up (`models`) | own process s | forked s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| median of {args.repeats} | {statistics.median(cold):.2f} | {statistics.median(warm):.2f} | "
          f"{statistics.median(cold) / statistics.median(warm):.2f} |")


if __name__ == "__main__":
    main()
