"""What every model.py shares: engine folder resolution, parameters, custom metrics."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from spark_runtime.paths import ENGINE_DIR_ENV, REPO_ROOT
from spark_runtime.triton_serving import IPC_LOCK


def model_parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def resolve_engine_dir(args: dict[str, Any], params: dict[str, str]) -> Path:
    """`engine` parameter (a model folder name) under SPARK_ENGINE_DIR, else <repo>/engines/cpu.

    The repository's location comes from Triton (args["model_repository"] is this model's folder),
    so a copied repository still finds its own engines/ beside it.
    """
    root = os.environ.get(ENGINE_DIR_ENV)
    if root:
        base = Path(root)
    else:
        repo = Path(args["model_repository"]).resolve().parent.parent
        base = (repo if (repo / "engines").is_dir() else REPO_ROOT) / "engines" / "cpu"
    return base / params.get("engine", args["model_name"])


def int_param(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name, "").strip()
    return int(value) if value else default


# Every decoupled model counts the requests its runner refused as busy (see DecoupledRunner).
REJECTED_METRIC = ("spark_requests_rejected_total", "Requests refused because the model was busy")


def counter(pb_utils: Any, name: str, description: str, labels: dict[str, str]) -> Any:
    """A Prometheus counter on Triton's metrics endpoint, or a no-op where the build lacks them."""
    try:
        family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
        return _Counter(family, family.Metric(labels=labels))
    except Exception as exc:  # older stubs have no custom metrics
        logging.getLogger(__name__).warning("custom metric %s unavailable: %s", name, exc)
        return _Counter(None, None)


class _Counter:
    """Holds the family too: Triton invalidates a metric whose family was garbage-collected."""

    def __init__(self, family: Any, metric: Any) -> None:
        self._family = family
        self._metric = metric

    def increment(self, value: float) -> None:
        if self._metric is not None and value:
            with IPC_LOCK:
                self._metric.increment(value)
