"""The `embed` model's engine: the packaged MiniLM's encoder exported to ONNX at `make engines` and
served by onnxruntime gives the vectors sentence-transformers gives (spark_runtime/engines/onnx_embed.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from build_engines import cpu
from spark_runtime.engines.onnx_embed import ONNX_FILE, OnnxEmbedder
from spark_runtime.text_services import EmbedService
from tests.fakes import pb_utils

TEXTS = [
    "pixelfox said: What is your favourite video game, and why?",
    "hi",
    "moonbeam said: my dog Biscuit and I got back from Oslo / Spark answered: Welcome back!",
    "Ünïcödé, emoji 🎉 and a URL https://example.com/x?y=1",
    "orbit likes spicy ramen and streams on Fridays " * 60,  # over the model's 256 tokens: truncated
]


@pytest.fixture(scope="module")
def reference(engine_dir: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(engine_dir / "embed" / "model"), device="cpu", local_files_only=True)
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def test_the_cpu_build_serves_the_embedding_through_onnxruntime(engine_dir: Path):
    engine = json.loads((engine_dir / "embed" / "engine.json").read_text())
    assert engine["runtime"] == "onnxruntime" and (engine_dir / "embed" / engine["onnx"]).is_file()
    assert engine["onnx_max_diff"] <= 1e-5
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    assert manifest["engines"]["embed"]["runtime"] == "onnxruntime"


def test_onnx_vectors_equal_sentence_transformers_in_a_batch_and_alone(engine_dir: Path, reference: np.ndarray):
    embed = OnnxEmbedder(engine_dir / "embed" / "model", engine_dir / "embed" / ONNX_FILE, threads=1)
    batch = embed.encode(TEXTS)  # padded to the longest text: the mask keeps the padding out of the mean
    alone = np.concatenate([embed.encode([text]) for text in TEXTS])
    assert batch.shape == (len(TEXTS), 384) and batch.dtype == np.float32
    assert np.abs(batch - reference).max() < 1e-5
    assert np.abs(alone - reference).max() < 1e-5
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def service(engine: Path) -> EmbedService:
    config = {"parameters": {"engine": {"string_value": engine.name}, "threads": {"string_value": "1"}}}
    args = {"model_config": json.dumps(config), "model_name": "embed", "model_repository": "unused"}
    return EmbedService(pb_utils, args)


def test_the_served_model_gives_the_same_vectors_on_either_runtime(
    engine_dir: Path, reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An engine folder written before the export (runtime sentence-transformers, the GB10 build's
    too) is still served, with the same vectors."""
    older = tmp_path / "engines" / "embed"
    shutil.copytree(engine_dir / "embed" / "model", older / "model")
    engine = json.loads((engine_dir / "embed" / "engine.json").read_text())
    older_engine = {k: v for k, v in engine.items() if not k.startswith("onnx")} | {"runtime": "sentence-transformers"}
    (older / "engine.json").write_text(json.dumps(older_engine))
    text = np.array([t.encode() for t in TEXTS], dtype=object)
    for root in (engine_dir, tmp_path / "engines"):
        monkeypatch.setenv("SPARK_ENGINE_DIR", str(root))
        got = service(root / "embed").handle({"text": text})["embedding"]
        assert np.abs(got - reference).max() < 1e-5, root


def test_an_export_that_does_not_match_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """The build checks the exported encoder against sentence-transformers; one that differs is
    removed and the engine says sentence-transformers serves it."""
    import spark_runtime.engines.onnx_embed as onnx_embed

    monkeypatch.setattr(onnx_embed, "TOLERANCE", -1.0)  # no export can pass
    engine = cpu.build_embed(tmp_path)
    assert engine["runtime"] == "sentence-transformers" and "onnx" not in engine
    assert not list((tmp_path / "embed").glob("*.onnx")) and not list((tmp_path / "embed").glob("*.tmp"))
    assert "no ONNX encoder" in capsys.readouterr().out
    monkeypatch.setattr(onnx_embed, "TOLERANCE", 1e-5)
    engine = cpu.build_embed(tmp_path)  # exported this time, then kept by the next build
    first = (tmp_path / "embed" / ONNX_FILE).stat().st_ino
    assert engine["runtime"] == "onnxruntime" and engine["onnx_max_diff"] <= 1e-5
    assert cpu.build_embed(tmp_path)["runtime"] == "onnxruntime"
    assert (tmp_path / "embed" / ONNX_FILE).stat().st_ino == first
