"""Streaming LLM with the TensorRT-LLM ensemble's tensor names. Logic: spark_runtime.llm_service."""

import os
import sys
from pathlib import Path

# The Python-backend stub runs isolated (PYTHONPATH is ignored): put the repo and the serving venv first.
sys.path[:0] = [
    str(Path(__file__).resolve().parents[3]),
    *filter(None, os.environ.get("SPARK_SITE_PACKAGES", "").split(os.pathsep)),
]

import triton_python_backend_utils as pb_utils

from spark_runtime.llm_service import LLMService


class TritonPythonModel:
    def initialize(self, args):
        self.service = LLMService(pb_utils, args)

    def execute(self, requests):
        for request in requests:
            self.service.runner.submit(request)
        return None

    def finalize(self):
        self.service.close()
