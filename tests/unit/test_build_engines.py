"""python -m build_engines cpu: what each engine is, where it came from, its size."""

import json
from pathlib import Path

from build_engines.__main__ import main


def test_cpu_manifest_describes_every_engine(engine_dir: Path):
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    assert manifest["target"] == "cpu"
    assert set(manifest["engines"]) == {"llm", "tts", "stt", "embed"}
    for name, engine in manifest["engines"].items():
        assert engine["source"]["package"] and engine["source"]["licence"] and engine["size_bytes"] > 1e6, name
        assert (engine_dir / name / "engine.json").is_file()
    assert manifest["engines"]["llm"]["runtime"] == "llama.cpp"
    assert (engine_dir / "llm" / "chat_template.jinja").read_text().count("<|im_start|>") >= 2


def test_rebuild_is_idempotent_and_cheap(tmp_path: Path):
    assert main(["cpu", "--out", str(tmp_path), "--only", "tts"]) == 0
    first = (tmp_path / "tts" / "en_US-joe-medium.onnx").stat().st_ino
    assert main(["cpu", "--out", str(tmp_path), "--only", "tts"]) == 0
    assert (tmp_path / "tts" / "en_US-joe-medium.onnx").stat().st_ino == first
