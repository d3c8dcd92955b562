"""Streaming TTS model. Logic: spark_runtime.speech_services.TTSService."""

import os
import sys
from pathlib import Path

# The Python-backend stub runs isolated (PYTHONPATH is ignored): put the repo and the serving venv first.
sys.path[:0] = [
    str(Path(__file__).resolve().parents[3]),
    *filter(None, os.environ.get("SPARK_SITE_PACKAGES", "").split(os.pathsep)),
]

import triton_python_backend_utils as pb_utils

from spark_runtime.speech_services import TTSService


class TritonPythonModel:
    def initialize(self, args):
        self.service = TTSService(pb_utils, args)

    def execute(self, requests):
        for request in requests:
            self.service.runner.submit(request)
        return None

    def finalize(self):
        self.service.close()
