"""Our served `llm` against the same GGUF behind llama.cpp's own OpenAI-compatible server.

    python -m llama_cpp.server --model <gguf> --n_threads 2 --host 127.0.0.1 --port <p> --n_ctx 4096

Both get the same rendered prompts (greedy, same max_tokens, same stop words) one request at a
time, interleaved request by request so background load hits both alike, in two scenarios:
  cold:    every prompt differs from its first token on (no prefix can be reused);
  persona: the same persona system prompt every turn (prefix reuse pays off).
llama.cpp is read through /v1/completions with stream=true (server-sent events) on loopback.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perf.grpc_stream import StreamingClient, llm_inputs
from perf.stats import Distribution, ratio
from perf.workload import QUESTIONS, chat_messages, cold_messages


@dataclass(frozen=True, slots=True)
class Generation:
    ttft_ms: float | None
    decode_tokens_per_s: float | None  # (tokens - 1) / (last token - first token)
    tokens: int


@dataclass
class ServerRuns:
    cold: list[Generation] = field(default_factory=list)
    persona: list[Generation] = field(default_factory=list)

    def ttft(self, scenario: str) -> Distribution | None:
        runs = self.cold if scenario == "cold" else self.persona
        return Distribution.of([g.ttft_ms for g in runs if g.ttft_ms is not None])

    def tokens_per_s(self) -> Distribution | None:
        return Distribution.of([g.decode_tokens_per_s for g in (*self.cold, *self.persona) if g.decode_tokens_per_s])


@dataclass
class LlamaCppComparison:
    ours: ServerRuns = field(default_factory=ServerRuns)
    llama_cpp: ServerRuns = field(default_factory=ServerRuns)
    command: str = ""
    skipped: str | None = None

    def ttft_ratio(self, scenario: str) -> float | None:
        """ours / llama.cpp at p50 (1.05 is 5 % slower)."""
        a, b = self.ours.ttft(scenario), self.llama_cpp.ttft(scenario)
        return ratio(a.p50 if a else None, b.p50 if b else None)

    def tokens_per_s_ratio(self) -> float | None:
        a, b = self.ours.tokens_per_s(), self.llama_cpp.tokens_per_s()
        return ratio(a.p50 if a else None, b.p50 if b else None)


def _generation(
    start: float, stamps: list[float], pieces: list[str], count_tokens: Callable[[Sequence[str]], int]
) -> Generation:
    tokens = count_tokens(pieces)
    ttft = (stamps[0] - start) * 1000 if stamps else None
    rate = (
        (tokens - 1) / (stamps[-1] - stamps[0]) if tokens > 1 and len(stamps) > 1 and stamps[-1] > stamps[0] else None
    )
    return Generation(ttft, rate, tokens)


class LlamaCppServer:
    """`python -m llama_cpp.server` as a child process; whoever starts it stops it."""

    def __init__(self, model: Path, *, port: int, threads: int = 2, n_ctx: int = 4096, log: Path | None = None) -> None:
        self.port = port
        self.args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--n_threads",
            str(threads),
            "--n_ctx",
            str(n_ctx),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--verbose",
            "False",
        ]
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 120.0) -> None:
        out = self._log.open("ab") if self._log else subprocess.DEVNULL
        self._proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(self._proc, ready_timeout_s)
        except BaseException:  # not ready, or the harness is stopped meanwhile: no server left behind
            self.stop()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], ready_timeout_s: float) -> None:
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode} (log: {self._log})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"llama_cpp.server not ready after {ready_timeout_s:.0f} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stream_completion(
        self,
        prompt: str,
        max_tokens: int,
        stops: tuple[str, ...],
        count_tokens: Callable[[Sequence[str]], int],
        timeout_s: float = 120.0,
    ) -> Generation:
        body = json.dumps(
            {
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "repeat_penalty": 1.0,
                "top_k": 0,
                "top_p": 1.0,
                "min_p": 0.0,
                "stream": True,
                "stop": list(stops),
            }
        )
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            start = time.perf_counter()
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"/v1/completions answered {response.status}: {response.read()[:300]!r}")
            stamps, parts = [], []
            for raw in response:  # server-sent events, one `data: {...}` line per token
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                text = json.loads(payload)["choices"][0].get("text", "")
                if text:
                    stamps.append(time.perf_counter())
                    parts.append(text)
            return _generation(start, stamps, parts, count_tokens)
        finally:
            conn.close()


def _ours(
    client: StreamingClient,
    prompt: str,
    max_tokens: int,
    stops: tuple[str, ...],
    count_tokens: Callable[[Sequence[str]], int],
) -> Generation:
    done = client.call("llm", llm_inputs(prompt, max_tokens, stop_words=stops))
    return _generation(done.sent_at, [a.at for a in done.arrivals], done.texts(), count_tokens)


def compare_with_llama_cpp(
    url: str,
    model: Path,
    count_tokens: Callable[[Sequence[str]], int],
    *,
    requests: int,
    port: int,
    max_tokens: int = 64,
    log: Path | None = None,
) -> LlamaCppComparison:
    result = LlamaCppComparison()
    try:
        import llama_cpp.server.app  # noqa: F401  (needs the [server] extras: fastapi, sse-starlette, ...)
    except ImportError as exc:
        result.skipped = (
            f"llama_cpp.server cannot start ({exc}); install fastapi, sse-starlette, "
            "starlette-context, pydantic-settings, uvicorn"
        )
        return result
    threads = int(os.environ.get("PERF_LLAMA_THREADS", "0")) or (os.cpu_count() or 2)
    server = LlamaCppServer(model, port=port, threads=threads, log=log)
    result.command = " ".join(server.args[1:]).replace(str(model), "<gguf>")
    with StreamingClient(url) as client:
        cold = [
            client.render_chat(cold_messages(QUESTIONS[i % len(QUESTIONS)], nonce=int(time.time()) % 50000 + i))
            for i in range(requests)
        ]
        persona = [client.render_chat(chat_messages(QUESTIONS[i % len(QUESTIONS)])) for i in range(requests)]
        server.start()
        try:
            warm_prompt, warm_stops = persona[-1]
            _ours(client, warm_prompt, 4, warm_stops, count_tokens)  # the persona prefix is now cached
            server.stream_completion(warm_prompt, 4, warm_stops, count_tokens)  # on both
            for scenario, prompts in (("cold", cold), ("persona", persona)):
                for prompt, stops in prompts:
                    getattr(result.ours, scenario).append(_ours(client, prompt, max_tokens, stops, count_tokens))
                    getattr(result.llama_cpp, scenario).append(
                        server.stream_completion(prompt, max_tokens, stops, count_tokens)
                    )
        finally:
            server.stop()
    return result
