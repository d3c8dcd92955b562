"""Shared fixtures: CPU engines built into a temp folder and one real tritonserver per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_runtime.serve import free_port  # noqa: F401  (imported from here by several tests)
from tests.timing import seconds

TEST_ADAPTER = "test_persona"


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
    server = TritonServer.on_free_ports(engine_dir, log)
    server.start()
    try:
        server.wait_ready(seconds(240))
        yield server
    finally:
        server.stop()
