"""The `llm_template` and `embed` models: small, non-streaming companions of the LLM."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from spark_runtime.chat_template import ChatTemplate, parse_messages
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.triton_model import int_param, model_parameters, resolve_engine_dir

MAX_EMBED_TEXTS = 256
MAX_EMBED_CHARS = 8192


def _respond_each(pb_utils: Any, requests: list[Any], handle: Any) -> list[Any]:
    """Non-decoupled execute: one response per request; a bad request gets an error response."""
    responses = []
    for request in requests:
        inputs = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}  # used before returning
        try:
            outputs = handle(inputs)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        except RequestError as exc:
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
    return responses


class TemplateService:
    """messages (JSON) -> prompt rendered with the served LLM's own chat template, + stop_words."""

    def __init__(self, pb_utils: Any, args: dict[str, Any]) -> None:
        self._pb = pb_utils
        self.template = ChatTemplate.from_engine_dir(resolve_engine_dir(args, model_parameters(args)))

    def handle(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = inputs.get("messages")
        if raw is None or raw.size != 1:
            raise RequestError("messages: one JSON string is required")
        flag = inputs.get("add_generation_prompt")
        add = True if flag is None else bool(flag.reshape(-1)[0])
        prompt = self.template.render(parse_messages(bytes(raw.reshape(-1)[0])), add_generation_prompt=add)
        return {
            "prompt": np.array([prompt.encode("utf-8")], dtype=object),
            "stop_words": np.array([s.encode("utf-8") for s in self.template.stop_words] or [b""], dtype=object),
            "special_tokens": np.array([json.dumps(self.template.special_tokens).encode("utf-8")], dtype=object),
        }

    def execute(self, requests: list[Any]) -> list[Any]:
        return _respond_each(self._pb, requests, self.handle)


class EmbedService:
    """text [N] -> embedding [N, D], L2-normalised (cosine similarity is a dot product)."""

    def __init__(self, pb_utils: Any, args: dict[str, Any]) -> None:
        self._pb = pb_utils
        params = model_parameters(args)
        engine_dir = resolve_engine_dir(args, params)
        manifest_path = engine_dir / "engine.json"
        if not manifest_path.is_file():
            raise EngineMissingError(f"no engine at {engine_dir}: run `make engines`")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        threads = int_param(params, "threads", 0)
        model_dir = engine_dir / manifest["model_dir"]
        self.encode: Callable[[list[str]], np.ndarray]
        if manifest.get("runtime") == "onnxruntime":  # the CPU default since make engines exports it
            from spark_runtime.engines.onnx_embed import OnnxEmbedder

            self.encode = OnnxEmbedder(model_dir, engine_dir / manifest["onnx"], threads=threads).encode
        else:
            import torch
            from sentence_transformers import SentenceTransformer

            if threads:
                torch.set_num_threads(threads)
            model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
            self.encode = lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    def handle(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = inputs.get("text")
        if raw is None or raw.size == 0:
            raise RequestError("text: at least one string is required")
        if raw.size > MAX_EMBED_TEXTS:
            raise RequestError(f"text: {raw.size} strings; send at most {MAX_EMBED_TEXTS} per request")
        texts = []
        for value in raw.reshape(-1):
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("text: not valid UTF-8") from None
            texts.append(text[:MAX_EMBED_CHARS])
        vectors = self.encode(texts)
        return {"embedding": np.asarray(vectors, dtype=np.float32)}

    def execute(self, requests: list[Any]) -> list[Any]:
        return _respond_each(self._pb, requests, self.handle)
