#!/usr/bin/env python3
"""`quiver search` wall time (process start to the last result, model load included) and peak
RSS, for one or more quiver binaries, each on its own index, alternating runs in one session.

  bench/scale/cli_search.py --run before OLD/quiver OLD_INDEX --run now target/release/quiver INDEX

Each index is built by its own binary (`quiver import bench/work/scale/export-N`, the export
from bench/scale/make_export.py), since older binaries may not read newer index formats.
"""
import argparse
import statistics
import subprocess
import time

QUERIES = [
    "open a file and read it line by line",
    "parse the header of an email message",
    "socket connect timeout",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", nargs=3, action="append", required=True,
                        metavar=("LABEL", "BINARY", "INDEX"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="vector,keyword,hybrid")
    args = parser.parse_args()
    modes = args.modes.split(",")
    results = {}
    for _ in range(args.rounds):
        for mode in modes:
            for label, binary, index in args.run:
                for query in QUERIES:
                    start = time.perf_counter()
                    out = subprocess.run(
                        ["/usr/bin/time", "-f", "%M", binary, "search", query,
                         "--index", index, "--mode", mode, "-k", "10", "--json"],
                        capture_output=True, text=True)
                    seconds = time.perf_counter() - start
                    if out.returncode != 0:
                        raise SystemExit(f"{label}: {out.stderr}")
                    kb = int(out.stderr.strip().splitlines()[-1])
                    results.setdefault((mode, label), []).append((seconds, kb))
    for mode in modes:
        for label, _, _ in args.run:
            runs = results[(mode, label)]
            print(f"{mode:8} {label:16} median {statistics.median(s for s, _ in runs) * 1000:6.0f} ms"
                  f"  min {min(s for s, _ in runs) * 1000:6.0f} ms"
                  f"  peak RSS {max(kb for _, kb in runs) / 1024:5.0f} MB  (n={len(runs)})")


if __name__ == "__main__":
    main()
