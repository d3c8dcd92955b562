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


# A stream's worth of chat and answers: what the served model's predictions are compared on.
CHAT_TEXT = (
    "<|im_start|>system\nYou are Spark, a cheerful streamer who answers chat in one or two short sentences."
    "<|im_end|>\n<|im_start|>user\nnightowl: hi Spark! how was your day? I just got back from work and I am"
    " so tired<|im_end|>\n<|im_start|>assistant\nWelcome back, nightowl! My day was great, I built a tiny"
    " castle in the game. Grab some tea and relax with us.<|im_end|>\n<|im_start|>user\npixel_pat: what is"
    " your favourite food? mine is pizza with pineapple, fight me<|im_end|>\n<|im_start|>assistant\nPizza"
    " with pineapple is brave! I like warm noodles on a rainy evening. Stay sparky!<|im_end|>\n<|im_start|>"
    "user\nrust_guy: can you tell me a fun fact about space before I go to sleep?<|im_end|>\n<|im_start|>"
    "assistant\nSure! A day on Venus is longer than its year, so you could have a very long nap there."
)


def _next_token_logprobs(model: Path, text: str):
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(str(model), n_ctx=1024, n_threads=2, logits_all=True, verbose=False)
    try:
        tokens = llm.tokenize(text.encode(), special=True)
        llm.eval(tokens)
        scores = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    scores -= scores.max(axis=-1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))


def test_the_packaged_llm_is_served_in_q8_0_and_predicts_as_the_packaged_q4_1(engine_dir: Path):
    """Q8_0 holds every Q4_1 weight to within a 17th of its own rounding step: the served model must
    predict the same next tokens as the packaged file (it reads prompts ~1.5x faster)."""
    import numpy as np

    from build_engines.cpu import _sha256
    from build_engines.packaged import SMOLLM2

    engine = json.loads((engine_dir / "llm" / "engine.json").read_text())
    served = engine_dir / "llm" / engine["model"]
    assert served.name == "SmolLM2-135M-Instruct.Q8_0.gguf" and [p.name for p in served.parent.glob("*.gguf")] == [
        served.name
    ]
    assert engine["converted"]["from_sha256"] == _sha256(SMOLLM2.path()) and engine["sha256"] == _sha256(served)
    packaged, ours = _next_token_logprobs(SMOLLM2.path(), CHAT_TEXT), _next_token_logprobs(served, CHAT_TEXT)
    kl = float((np.exp(packaged) * (packaged - ours)).sum(axis=-1).mean())
    same_top = float((packaged.argmax(axis=-1) == ours.argmax(axis=-1)).mean())
    assert kl < 0.02 and same_top >= 0.9, (kl, same_top)


def test_the_served_llm_is_converted_once_and_the_same_every_time(tmp_path: Path):
    """The persona adapters are keyed on the served file's sha256: a rebuild must not rewrite it,
    and a damaged file is written again byte for byte."""
    from build_engines.cpu import build_llm

    first = build_llm(tmp_path)
    served = tmp_path / "llm" / first["model"]
    inode = served.stat().st_ino
    assert build_llm(tmp_path)["sha256"] == first["sha256"] and served.stat().st_ino == inode
    served.write_bytes(b"GGUF broken")
    assert build_llm(tmp_path)["sha256"] == first["sha256"] and served.stat().st_size > 100e6
