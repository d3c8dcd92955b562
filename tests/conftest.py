"""Shared fixtures: CPU engines built into a temp folder and one real tritonserver per session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.timing import seconds

TEST_ADAPTER = "test_persona"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """engines/cpu built from the packaged models (hard links: no copy), plus a test LoRA adapter."""
    from build_engines.cpu import build_cpu
    from build_engines.lora_gguf import random_lora

    out = tmp_path_factory.mktemp("engines") / "cpu"
    build_cpu(out)
    model = next((out / "llm").glob("*.gguf"))
    random_lora(model, out / "llm" / "adapters" / f"{TEST_ADAPTER}.gguf", seed=1, scale=0.1)
    return out


@pytest.fixture(scope="session")
def triton(engine_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from spark_runtime.serve import TritonServer

    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        engine_dir=engine_dir,
        exit_timeout_s=5,
        log_file=log,
    )
    server.start()
    try:
        server.wait_ready(seconds(240))
        yield server
    finally:
        server.stop()
