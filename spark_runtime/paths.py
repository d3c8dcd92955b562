"""Where engines live. One place decides: SPARK_ENGINE_DIR, else <repo>/engines/cpu."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_DIR_ENV = "SPARK_ENGINE_DIR"


def engine_root() -> Path:
    configured = os.environ.get(ENGINE_DIR_ENV)
    return Path(configured).resolve() if configured else REPO_ROOT / "engines" / "cpu"


def engine_dir(model: str) -> Path:
    return engine_root() / model
