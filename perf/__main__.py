"""python -m perf: latency report under perf/reports/<date>-<commit>/ (Markdown + PNG plots).

python -m perf                         # full run against SPARK_TRITON_URL or 127.0.0.1:8100,
                                       # starting a server when none answers there
python -m perf --url 127.0.0.1:8100    # an already running server
python -m perf --smoke                 # 2-4 requests per measurement, 1 e2e turn: checks the harness
python -m perf --only llm,speech       # a subset: llm, speech, pipelines, overhead, llama_cpp, e2e
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.report import missing_parts, summary_text
from perf.run import MEASUREMENTS, RunPlan, run
from spark_runtime.paths import REPO_ROOT, engine_root
from spark_runtime.serve import DEFAULT_GRPC_PORT


def _names(text: str) -> set[str]:
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = names - set(MEASUREMENTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measurement(s) {sorted(unknown)}; known: {', '.join(MEASUREMENTS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SPARK_TRITON_URL", f"127.0.0.1:{DEFAULT_GRPC_PORT}"),
        help="Triton gRPC address (default: $SPARK_TRITON_URL or %(default)s)",
    )
    parser.add_argument(
        "--start-server",
        action="store_true",
        help="always start a fresh server for the run (on free ports) instead of using --url",
    )
    parser.add_argument(
        "--engine-dir",
        type=Path,
        default=None,
        help="engine target folder the server serves (default: $SPARK_ENGINE_DIR or engines/cpu)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "reports", help="reports folder")
    parser.add_argument("--smoke", action="store_true", help="a few requests per measurement (CI)")
    parser.add_argument("--turns", type=int, default=None, help="scripted chat turns for the e2e part")
    parser.add_argument("--only", type=_names, default=set(MEASUREMENTS), help="comma-separated measurements")
    parser.add_argument("--skip", type=_names, default=set(), help="comma-separated measurements to leave out")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not run perf/tools/install_perf_analyzer.sh (use what is installed)",
    )
    args = parser.parse_args(argv)
    plan = RunPlan.quick(args.turns or 1) if args.smoke else RunPlan.full(args.turns or 50)
    engines = (args.engine_dir or engine_root()).resolve()
    if not (engines / "manifest.json").is_file():
        print(f"error: no engines at {engines} (manifest.json missing): run `make engines`", file=sys.stderr)
        return 2
    report, folder = run(
        url=None if args.start_server else args.url,
        engine_root=engines,
        reports_dir=args.out,
        plan=plan,
        only=args.only - args.skip,
        install=not args.no_install,
        argv=argv,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(summary_text(report))
    print(f"report: {folder / 'report.md'}")
    problems = missing_parts(folder)
    for problem in problems:
        print(f"incomplete report: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
