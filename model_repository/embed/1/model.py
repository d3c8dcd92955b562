"""Sentence embeddings for the client's memory. Logic: spark_runtime.text_services.EmbedService."""

import os
import sys
from pathlib import Path

# The Python-backend stub runs isolated (PYTHONPATH is ignored): put the repo and the serving venv first.
sys.path[:0] = [
    str(Path(__file__).resolve().parents[3]),
    *filter(None, os.environ.get("SPARK_SITE_PACKAGES", "").split(os.pathsep)),
]

import triton_python_backend_utils as pb_utils

from spark_runtime.text_services import EmbedService


class TritonPythonModel:
    def initialize(self, args):
        self.service = EmbedService(pb_utils, args)

    def execute(self, requests):
        return self.service.execute(requests)
