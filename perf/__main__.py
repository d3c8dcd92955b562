"""python -m perf: latency report under perf/reports/<date>-<commit>/ (Markdown + PNG plots).

python -m perf                         # full run against SPARK_TRITON_URL or 127.0.0.1:8100,
                                       # starting a server when none answers there
python -m perf --url 127.0.0.1:8100    # an already running server
python -m perf --smoke                 # 2-4 requests per measurement, 1 e2e turn: checks the harness
python -m perf --only llm,speech       # a subset: llm, speech, pipelines, overhead, llama_cpp, e2e, quality
python -m perf --dry-run               # which server it would measure (or start), and nothing else
python -m perf --only e2e --turns 500 --no-memory  # a long stream without the memory store
python -m perf quality [--short]       # the answer-quality benchmark alone (see perf/quality.py)
python -m perf memory [--sizes 1000]   # recall time as the memory store grows (see perf/memory_bench.py)
python -m perf voice [--loopback]      # the streamer's voice: transcript, answer, barge-in (perf/voice_bench.py)
python -m perf game [--repeats N]      # Minecraft skill calls with and without the grammar (perf/game_bench.py)
python -m perf first-piece [--answers N]  # first speakable piece policies vs first audio (perf/first_piece_bench.py)
python -m perf normalise [--no-audio] # the tts text normaliser over its corpus (perf/normalise_bench.py)
python -m perf stops [--grpc-cancel]   # does the server survive streams stopped early? (perf/stop_bench.py)
python -m perf overhead-ab --against REF  # this checkout's serving against REF's, paired (perf/overhead_ab.py)

Exit code: 0 when every selected measurement ran, 1 when one failed or the report is incomplete,
2 without engines, 130 / 143 when stopped by Ctrl-C / SIGTERM (a server it started is stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.report import failures, missing_parts, summary_text
from perf.run import MEASUREMENTS, RunPlan, run, server_plan
from spark_runtime.paths import REPO_ROOT, engine_root
from spark_runtime.serve import DEFAULT_GRPC_PORT


def _names(text: str) -> set[str]:
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = names - set(MEASUREMENTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measurement(s) {sorted(unknown)}; known: {', '.join(MEASUREMENTS)}")
    return names


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop(signum: int, _frame: object) -> None:
    # From here on the `finally` blocks stop what the harness started (tritonserver and its model
    # stubs, llama.cpp's server, the client); each stop is bounded (TritonServer.stop kills the
    # process group after its timeout), so a second signal must not cut it short.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # os.write: the main thread may be inside a print to stderr right now (a reentrant print fails)
    os.write(2, f"{signal.Signals(signum).name}: stopping, servers started by the harness included ...\n".encode())
    raise SystemExit(128 + signum)


def stop_on_signals() -> None:
    """SIGTERM (from `timeout`, a service manager) ends the run like Ctrl-C does: through the
    harness's `finally` blocks, not by killing this process and leaving its servers running."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["memory"]:
        from perf import memory_bench

        return memory_bench.main(argv[1:])
    if argv[:1] == ["voice"]:
        from perf import voice_bench

        stop_on_signals()
        return voice_bench.main(argv[1:])
    if argv[:1] == ["game"]:
        from perf import game_bench

        stop_on_signals()
        return game_bench.main(argv[1:])
    if argv[:1] == ["first-piece"]:
        from perf import first_piece_bench

        return first_piece_bench.main(argv[1:])
    if argv[:1] == ["normalise"]:
        from perf import normalise_bench

        return normalise_bench.main(argv[1:])
    if argv[:1] == ["stops"]:
        from perf import stop_bench

        stop_on_signals()
        return stop_bench.main(argv[1:])
    if argv[:1] == ["overhead-ab"]:
        from perf import overhead_ab

        stop_on_signals()
        return overhead_ab.main(argv[1:])
    if argv[:1] == ["quality"]:
        from perf import quality

        stop_on_signals()
        return quality.main(argv[1:])
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
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="the e2e run's client without its memory store (what the rest of the client costs alone)",
    )
    parser.add_argument("--only", type=_names, default=set(MEASUREMENTS), help="comma-separated measurements")
    # (quality: the answer-quality benchmark, the whole corpus; --smoke: its short form)
    parser.add_argument("--skip", type=_names, default=set(), help="comma-separated measurements to leave out")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not run perf/tools/install_perf_analyzer.sh (use what is installed)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say which server would be measured (or started) and stop there"
    )
    args = parser.parse_args(argv)
    plan = RunPlan.quick(args.turns or 1) if args.smoke else RunPlan.full(args.turns or 50)
    if args.no_memory:
        plan = dataclasses.replace(plan, e2e=dataclasses.replace(plan.e2e, memory=False))
    engines = (args.engine_dir or engine_root()).resolve()
    if not (engines / "manifest.json").is_file():
        print(f"error: no engines at {engines} (manifest.json missing): run `make engines`", file=sys.stderr)
        return 2
    url = None if args.start_server else args.url
    only = args.only - args.skip
    if args.dry_run:
        print(f"python -m perf {server_plan(url)}")
        print(f"engines: {engines}; measurements: {', '.join(m for m in MEASUREMENTS if m in only)}")
        print(f"report under {args.out}")
        return 0
    stop_on_signals()
    report, folder = run(
        url=url,
        engine_root=engines,
        reports_dir=args.out,
        plan=plan,
        only=only,
        install=not args.no_install,
        argv=argv,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(summary_text(report))
    print(f"report: {folder / 'report.md'}")
    problems = missing_parts(folder)
    for problem in problems:
        print(f"incomplete report: {problem}", file=sys.stderr)
    failed = failures(report)
    for failure in failed:
        print(f"measurement failed: {failure}", file=sys.stderr)
    return 1 if problems or failed else 0


if __name__ == "__main__":
    sys.exit(main())
