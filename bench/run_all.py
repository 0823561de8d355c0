"""``make bench``: every benchmark in one run, printed and written to ``bench/results/latest.md``.

Every comparison is made inside one benchmark run (memmon next to node_exporter, next to the floor of reading the
kernel files, next to no agent at all), so the noise of this shared machine hits both sides alike.

Usage: ``python bench/run_all.py [--quick]`` (``--quick``: each benchmark's smoke size; figures not meaningful).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "check_cost.py",
    "usage_watch.py",
    "footprint.py",
    "multi_target.py",
    "node_mode.py",
    "oom_race.py",
    "alert_latency.py",
    "leaks.py",
    "trend.py",
    "prefork_cost.py",
    "prefork.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (used by make test)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    sections = [
        f"# memmon benchmarks — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
        f"Python {sys.version.split()[0]}"
        + (" — quick smoke run, figures not meaningful" if args.quick else ""),
    ]
    failed = []
    for name in BENCHMARKS:
        script = HERE / name
        if not script.exists():
            continue
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(script), *(["--quick"] if args.quick else [])],
            capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        took = time.monotonic() - started
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        sections.append(f"\n## {name} ({took:.0f} s)\n\n{result.stdout.strip()}")
        if result.returncode != 0:
            failed.append(name)
            sections.append(
                f"\n**{name} failed (exit {result.returncode}):**\n\n```\n{result.stderr[-3000:]}\n```"
            )
            sys.stderr.write(result.stderr)
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(sections) + "\n")
        print(f"\nwritten to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
