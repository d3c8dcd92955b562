"""python -m perf overhead-ab: is this checkout's serving faster than another commit's? A paired A/B.

`python -m perf --only overhead` compares the served llm with the same engine in this process, and
one run's figure moves by 2 points or more between runs of the same code (README, "Serving
overhead"): too much to see a change worth 1 %. This starts two servers side by side on the same
engines, this checkout's and one made from another commit's `model_repository/` and
`spark_runtime/` (`git archive`), and sends each of --requests greedy llm requests to both and to
the engine in this process, the three calls in rotating order (each of the six orders equally
often). Each request is its own comparison, so the machine's speed, which drifts within minutes,
falls out of the figure.

    python -m perf overhead-ab --against HEAD~1             # 90 requests of 64 tokens
    python -m perf overhead-ab --against a0b4c43 --requests 180

Prints this checkout's time over the other's (the median over requests, and in how many it was
faster), the median difference with a seeded 90 % bootstrap interval, and each server's overhead
against in-process; writes them as JSON to --out. Exit code 2 without engines or when the
commit has no serving tree.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import cycle, islice, permutations
from pathlib import Path

import numpy as np

from perf.machine import git_commit, utc_now
from perf.stats import median_interval
from spark_runtime.paths import REPO_ROOT, engine_root

SERVING_TREE = ("model_repository", "spark_runtime")  # what a server runs from a commit
PATHS = ("baseline", "changed", "in_process")
READY_TIMEOUT_S = 300.0


def call_orders(requests: int) -> list[tuple[str, ...]]:
    """The order of each request's three calls: the six orders in turn, so that none of the three
    paths is always first or always after another (the order moves a call's time)."""
    return list(islice(cycle(permutations(PATHS)), requests))


@dataclass
class PairedAB:
    """Per request, the time of the whole answer (ms) on each path."""

    against: str
    max_tokens: int
    baseline: list[float] = field(default_factory=list)
    changed: list[float] = field(default_factory=list)
    in_process: list[float] = field(default_factory=list)
    commit: str = field(default_factory=git_commit)  # this checkout's, when the A/B began

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = min(len(self.baseline), len(self.changed), len(self.in_process))
        return tuple(np.asarray(getattr(self, p)[:n], dtype=float) for p in PATHS)  # type: ignore[return-value]

    @property
    def requests(self) -> int:
        return len(self._arrays()[0])

    def ratio_p50(self) -> float:
        """The changed server's time over the baseline's, median over requests (< 1: faster)."""
        baseline, changed, _ = self._arrays()
        return float(np.median(changed / baseline))

    def changed_faster(self) -> int:
        baseline, changed, _ = self._arrays()
        return int((changed < baseline).sum())

    def difference_ms(self, level: float = 0.9) -> tuple[float, float, float]:
        """Median of (changed - baseline) per request, with a seeded bootstrap interval."""
        baseline, changed, _ = self._arrays()
        diff = changed - baseline
        low, high = median_interval(diff, level)
        return float(np.median(diff)), low, high

    def overhead(self, path: str) -> float:
        """A server's time over in-process, median over requests, minus 1."""
        arrays = dict(zip(PATHS, self._arrays(), strict=True))
        return float(np.median(arrays[path] / arrays["in_process"]) - 1.0)

    def summary(self) -> dict[str, object]:
        median, low, high = self.difference_ms()
        return {
            "against": self.against,
            "changed": self.commit,
            "requests": self.requests,
            "max_tokens": self.max_tokens,
            "changed_over_baseline_p50": round(self.ratio_p50(), 4),
            "changed_faster_in": self.changed_faster(),
            "difference_ms_p50": round(median, 2),
            "difference_ms_90pct_interval": [round(low, 2), round(high, 2)],
            "overhead_pct": {p: round(self.overhead(p) * 100, 2) for p in ("baseline", "changed")},
            "in_process_ms_p50": round(float(np.median(self._arrays()[2])), 1),
        }

    def lines(self) -> list[str]:
        s = self.summary()
        low, high = s["difference_ms_90pct_interval"]  # type: ignore[misc]
        return [
            f"overhead A/B: this checkout ({s['changed']}) against {self.against}, {s['requests']} requests "
            f"of up to {self.max_tokens} tokens, each served by both and run in-process in rotating order",
            f"  time over {self.against}'s: {s['changed_over_baseline_p50']:.3f} at p50 "
            f"(faster in {s['changed_faster_in']} of {s['requests']})",
            f"  difference p50 {s['difference_ms_p50']:+.1f} ms (90 % interval {low:+.1f} to {high:+.1f} ms; "
            f"in-process answer p50 {s['in_process_ms_p50']:.0f} ms)",
            f"  overhead against in-process: {self.against} {s['overhead_pct']['baseline']:.1f} %, "  # type: ignore[index]
            f"this checkout {s['overhead_pct']['changed']:.1f} %",  # type: ignore[index]
        ]


def serving_tree(ref: str, into: Path, repo: Path = REPO_ROOT) -> Path:
    """`model_repository/` and `spark_runtime/` as they are at `ref`, under `into`. A model.py puts
    its own tree first on the stub's path, so a server on this model repository runs that code."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", ref, *SERVING_TREE],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"no serving tree at {ref!r}: {exc.stderr.decode(errors='replace').strip()}") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(against: str, *, requests: int, max_tokens: int, engines: Path, folder: Path) -> PairedAB:
    from perf.grpc_stream import StreamingClient, llm_inputs
    from perf.inprocess import _local_llm, _served
    from perf.workload import QUESTIONS, chat_messages
    from spark_runtime.engines import load_engine
    from spark_runtime.serve import TritonServer

    result = PairedAB(against=against, max_tokens=max_tokens)
    with tempfile.TemporaryDirectory(prefix="spark-overhead-ab-") as scratch:
        tree = serving_tree(against, Path(scratch))
        baseline = replace(
            TritonServer.on_free_ports(engines, folder / "baseline-tritonserver.log"),
            model_repository=tree / "model_repository",
        )
        changed = TritonServer.on_free_ports(engines, folder / "changed-tritonserver.log")
        with baseline, changed:
            baseline.wait_ready(READY_TIMEOUT_S)
            changed.wait_ready(READY_TIMEOUT_S)
            with StreamingClient(baseline.grpc_url) as old, StreamingClient(changed.grpc_url) as new:
                rendered = [new.render_chat(chat_messages(q)) for q in QUESTIONS]
                llm = load_engine(engines / "llm")
                try:
                    prompt, stops = rendered[0]  # every path reads the persona's prefix once first
                    _local_llm(llm, prompt, 8, stops)
                    for client in (old, new):
                        _served(client, "llm", llm_inputs(prompt, 8, stop_words=stops))
                    for i, order in enumerate(call_orders(requests)):
                        prompt, stops = rendered[i % len(rendered)]
                        inputs = llm_inputs(prompt, max_tokens, stop_words=stops, stream=True)
                        calls: dict[str, Callable[[], object]] = {
                            "baseline": partial(_served, old, "llm", inputs),
                            "changed": partial(_served, new, "llm", inputs),
                            "in_process": partial(_local_llm, llm, prompt, max_tokens, stops),
                        }
                        for path in order:
                            getattr(result, path).append(calls[path]().total_ms)  # type: ignore[attr-defined]
                finally:
                    llm.close()
    return result


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf overhead-ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the commit (or branch, tag) to compare this checkout with")
    parser.add_argument("--requests", type=int, default=90, help="requests, each sent to all three paths")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engine-dir", type=Path, default=None, help="default: $SPARK_ENGINE_DIR or engines/cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default perf/reports/overhead-ab-<time>.json)")
    args = parser.parse_args(argv)
    if args.requests < 2:
        parser.error("--requests must be 2 or more")
    engines = (args.engine_dir or engine_root()).resolve()
    if not (engines / "llm").is_dir():
        print(f"error: no engines at {engines}: run `make engines`", file=sys.stderr)
        return 2
    reports = REPO_ROOT / "perf" / "reports"
    out = args.out or reports / f"overhead-ab-{utc_now():%Y%m%d-%H%M%S}.json"
    try:
        result = measure(
            args.against, requests=args.requests, max_tokens=args.max_tokens, engines=engines, folder=out.parent
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {**result.summary(), "times_ms": {p: getattr(result, p) for p in PATHS}}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(result.lines()))
    print(f"  {out}")
    return 0
