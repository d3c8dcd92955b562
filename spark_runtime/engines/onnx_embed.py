"""Sentence embeddings (all-MiniLM-L6-v2) through onnxruntime, the same vectors as
sentence-transformers gives, in under half its time on a CPU.

The client embeds each viewer's chat line to recall memories while the LLM reads that line on the
same cores, and on two cores whatever the embedding takes the LLM's read loses and more (its two
threads wait on each other while one shares a core). sentence-transformers runs the model through
PyTorch: ~16 ms a chat line on one thread here. The same encoder exported once to ONNX at
`make engines` (`export_encoder`) and run by onnxruntime with the model's own tokenizer takes ~7.

What sentence-transformers does around the encoder is done here as it does it: the tokenizer
truncates at the model's `max_seq_length` and pads to the longest text of the batch, the token
vectors are averaged over the attention mask (the model's `1_Pooling`) and L2-normalised.
`export_encoder` checks the result against sentence-transformers before it keeps the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ONNX_FILE = "encoder.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CHECK_TEXTS = (
    "pixelfox said: What is your favourite video game, and why?",
    "moonbeam said: Can you explain black holes in simple words? / Spark answered: They are like dark corners.",
    "hi",
    "orbit likes spicy ramen and streams on Fridays " * 40,  # past max_seq_length: truncated alike
)
TOLERANCE = 1e-5  # largest difference allowed from sentence-transformers' vector (unit length)


def max_seq_length(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", 256)) if config.is_file() else 256


class OnnxEmbedder:
    """texts -> float32 [N, D] unit vectors; `model_dir` is the sentence-transformers folder (its
    tokenizer and length), `onnx_path` the exported encoder."""

    def __init__(self, model_dir: Path, onnx_path: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        pooling = model_dir / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens"):
            raise ValueError(f"{model_dir}: only mean pooling is supported")
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length(model_dir))
        self.tokenizer.no_padding()  # the file pads every text to a fixed length; pad to the batch's longest
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        batch = {name: np.zeros((len(encodings), length), dtype=np.int64) for name in INPUTS}
        for row, e in enumerate(encodings):
            batch["input_ids"][row, : len(e.ids)] = e.ids
            batch["attention_mask"][row, : len(e.ids)] = e.attention_mask
            batch["token_type_ids"][row, : len(e.ids)] = e.type_ids
        hidden = self.session.run(None, batch)[0]
        mask = batch["attention_mask"][..., None].astype(np.float32)
        mean = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return np.asarray(mean / norms, dtype=np.float32)


def export_encoder(model_dir: Path, target: Path) -> float:
    """Writes the encoder of the sentence-transformers model in `model_dir` to `target` (ONNX,
    dynamic batch and length) and returns the largest difference between its vectors and
    sentence-transformers' over CHECK_TEXTS; raises ValueError (and leaves no file) past TOLERANCE."""
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    encoder = reference[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    sample = reference.tokenizer(["a chat line"], return_tensors="pt")
    tmp = target.with_suffix(".tmp")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the model's Python branches
        torch.onnx.export(
            Encoder(encoder),
            tuple(sample[name] for name in INPUTS),
            str(tmp),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    try:
        expected = reference.encode(list(CHECK_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
        exported = OnnxEmbedder(model_dir, tmp, threads=1)
        got = exported.encode(CHECK_TEXTS)
        one_by_one = np.concatenate([exported.encode([t]) for t in CHECK_TEXTS])
        diff = float(max(np.abs(got - expected).max(), np.abs(one_by_one - expected).max()))
        if diff > TOLERANCE:
            raise ValueError(f"the ONNX encoder's vectors differ from sentence-transformers' by {diff:.2e}")
        tmp.replace(target)
        return diff
    finally:
        tmp.unlink(missing_ok=True)
