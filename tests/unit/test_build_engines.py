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


def test_the_llm_engine_can_be_built_from_a_local_gguf(tmp_path: Path, capsys):
    from build_engines.packaged import SMOLLM2
    from spark_runtime.engines import load_engine

    own = tmp_path / "models" / "my-model.Q4.gguf"
    own.parent.mkdir()
    own.write_bytes(SMOLLM2.path().read_bytes())  # any GGUF with a chat template will do
    out = tmp_path / "engines"
    assert main(["cpu", "--out", str(out), "--only", "llm"]) == 0
    assert main(["cpu", "--out", str(out), "--only", "llm", "--llm-gguf", str(own)]) == 0
    engine = json.loads((out / "llm" / "engine.json").read_text())
    assert engine["model"] == "my-model.Q4.gguf" and engine["source"]["file"] == str(own)
    assert [p.name for p in (out / "llm").glob("*.gguf")] == ["my-model.Q4.gguf"]  # the packaged one is gone
    assert "<|im_start|>" in (out / "llm" / "chat_template.jinja").read_text()
    llm = load_engine(out / "llm", threads=1, slots=1)
    try:
        assert llm.chat_template()
    finally:
        llm.close()


def test_a_file_that_is_not_a_usable_gguf_gets_a_clear_error(tmp_path: Path, capsys):
    import gguf

    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 64)
    assert main(["cpu", "--out", str(tmp_path / "e"), "--only", "llm", "--llm-gguf", str(not_gguf)]) == 2
    assert "not a GGUF model file" in capsys.readouterr().err
    bare = tmp_path / "bare.gguf"
    writer = gguf.GGUFWriter(str(bare), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert main(["cpu", "--out", str(tmp_path / "e"), "--only", "llm", "--llm-gguf", str(bare)]) == 2
    assert "carries no tokenizer.chat_template" in capsys.readouterr().err
    assert main(["cpu", "--out", str(tmp_path / "e"), "--only", "llm", "--llm-gguf", str(tmp_path / "nope.gguf")]) == 2
    assert "no such file" in capsys.readouterr().err
