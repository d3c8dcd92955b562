"""The memory watch warns once per crossing of the budget, and reads Triton's gauges."""

import http.server
import threading

from spark_client import health
from spark_client.health import MemoryWatch, triton_memory


def test_warns_once_per_crossing(monkeypatch):
    readings = iter([95, 96, 50, 97])  # percent used
    monkeypatch.setattr(
        health, "meminfo", lambda: (lambda used: {"MemTotal": 100, "MemAvailable": 100 - used})(next(readings))
    )
    warnings: list[str] = []
    watch = MemoryWatch(metrics_url=None, warn_fraction=0.9, warn=warnings.append)
    for _ in range(4):
        watch.check()
    assert len(warnings) == 2 and "95% used" in warnings[0]


def test_triton_memory_gauges_are_summed():
    body = (
        b'# HELP nv_gpu_memory_used_bytes x\nnv_gpu_memory_used_bytes{gpu_uuid="a"} 1e9\n'
        b'nv_gpu_memory_used_bytes{gpu_uuid="b"} 2e9\nnv_cpu_memory_total_bytes 8e9\n'
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gauges = triton_memory(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
    assert gauges == {"nv_gpu_memory_used_bytes": 3e9, "nv_cpu_memory_total_bytes": 8e9}
    assert triton_memory("http://127.0.0.1:9/metrics") == {}
