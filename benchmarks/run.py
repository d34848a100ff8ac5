"""Run the real-data benchmarks and write markdown + CSV tables under ``benchmarks/results/``.

Usage::

    python -m benchmarks.run              # full settings
    python -m benchmarks.run --quick      # small settings (under 10 minutes on 2 cores),
                                          # written to benchmarks/results/quick/
    python -m benchmarks.run --only esol speed
    python -m benchmarks.run --jobs 2     # ESOL fits in 2 worker processes

Each section runs the fusion strategies registered in the installed modfuse
(``modfuse.fusion.available()``), so it follows the library as strategies are added. The data
are read from ``../shared/data`` (override with ``$MODFUSE_SHARED_DATA``); a section whose
data folder is absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks import common

SECTIONS = ("esol", "remote_sensing", "speed", "missing", "lego_quality", "pipeline", "small_cohorts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings (1 seed, few epochs)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared or small CPU more threads can be far slower)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="ESOL: fits run in this many worker processes (each on --threads threads)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for the tables (default {common.RESULTS}; with --quick its quick/ sub-folder, so a "
        "quick run never overwrites the full run's committed tables)",
    )
    args = parser.parse_args(argv)
    out = args.out or (common.RESULTS / "quick" if args.quick else common.RESULTS)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.run " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    command = command.strip()
    common.quiet()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    for section in args.only:
        folder = {"esol": "esol", "remote_sensing": "eopatch-slovenia"}.get(section)
        if folder and not (common.DATA / folder).is_dir():
            log(f"{section}: skipped, data folder {common.DATA / folder} is absent")
            continue
        log(f"{section}: start")
        if section == "esol":
            from benchmarks import esol

            esol.run(esol.QUICK if args.quick else esol.Settings(), command, log, jobs=args.jobs, out_dir=out)
        elif section == "remote_sensing":
            from benchmarks import remote_sensing

            remote_sensing.run(
                remote_sensing.QUICK if args.quick else remote_sensing.Settings(), command, log, out_dir=out
            )
        elif section == "missing":
            from benchmarks import missing

            missing.run(missing.QUICK if args.quick else missing.Settings(), command, log, out_dir=out)
        elif section == "lego_quality":
            from benchmarks import lego_quality

            lego_quality.run(lego_quality.QUICK if args.quick else lego_quality.Settings(), command, log, out_dir=out)
        elif section == "small_cohorts":
            from benchmarks import small_cohorts

            small_cohorts.run(
                small_cohorts.QUICK if args.quick else small_cohorts.Settings(),
                command,
                log,
                jobs=args.jobs,
                out_dir=out,
            )
        elif section == "pipeline":
            from benchmarks import pipeline

            pipeline.main([*(["--quick"] if args.quick else []), "--out", str(out / "pipeline.md")])
        else:
            from benchmarks import speed

            speed.run(speed.QUICK if args.quick else speed.Settings(), command, log, out_dir=out)
        log(f"{section}: done, tables in {out}")
    log("all done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
