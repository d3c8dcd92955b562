"""Shared fixtures: CPU engines built into a temp folder and one real tritonserver per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_runtime.serve import free_port  # noqa: F401  (imported from here by several tests)
from tests.timing import seconds

TEST_ADAPTER = "test_persona"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """engines/cpu built from the packaged models (hard links: no copy), plus a test LoRA adapter and
    the shipped personas' trained adapters (linked from `make engines`' build when they match, else
    trained here: a few minutes)."""
    from build_engines.adapters import build_adapters
    from build_engines.cpu import build_cpu
    from build_engines.lora_gguf import random_lora

    out = tmp_path_factory.mktemp("engines") / "cpu"
    build_cpu(out)
    model = next((out / "llm").glob("*.gguf"))
    random_lora(model, out / "llm" / "adapters" / f"{TEST_ADAPTER}.gguf", seed=1, scale=0.1)
    build_adapters(out / "llm", REPO / "personas", reuse_from=REPO / "engines" / "cpu" / "llm" / "adapters")
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


@pytest.fixture(autouse=True)
def _restart_a_crashed_server(request: pytest.FixtureRequest) -> None:
    """The wheel's tritonserver (2.51) can die of SIGSEGV in its gRPC frontend under heavy
    cancellation, and then either exit or hang (tests/triton_helpers.server_crash). The test that
    was running when it died fails on its own; the tests after it get a restarted server on the
    same ports instead of failing one by one."""
    if "triton" not in request.fixturenames:
        return
    from tests.triton_helpers import restart_server, server_crash

    server = request.getfixturevalue("triton")
    why = server_crash(server)
    if why is None:
        return
    import warnings

    warnings.warn(f"{why} (see {server.log_file}); restarting it for {request.node.nodeid}", stacklevel=2)
    restart_server(server)
