"""The llama.cpp engine in-process on the packaged SmolLM2 GGUF (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import RequestError

PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine(engine_dir: Path):
    from spark_runtime.engines import load_engine

    e = load_engine(engine_dir / "llm", slots=2, threads=2)
    yield e
    e.close()


def run(engine, **kw) -> tuple[str, GenerationStats]:
    stats = GenerationStats()
    return "".join(engine.generate(GenerationRequest(prompt=PROMPT, **kw), stats)), stats


def test_greedy_is_deterministic_and_reuses_the_cached_prefix(engine):
    first, _ = run(engine, max_tokens=16)
    second, stats = run(engine, max_tokens=16)
    assert first == second and first.strip()
    assert stats.reused_prompt_tokens == stats.prompt_tokens - 1  # all but the last token cached


def test_max_tokens_and_stop_words(engine):
    text, stats = run(engine, max_tokens=5, end_id=-1)
    assert stats.generated_tokens == 5 and stats.finish_reason == "length"
    full, _ = run(engine, max_tokens=24)
    word = full.split()[2]
    cut, stats = run(engine, max_tokens=24, stop_words=(word,))
    assert stats.finish_reason == "stop" and word not in cut and full.startswith(cut)


def test_closing_the_stream_stops_decoding_and_frees_the_slot(engine):
    stats = GenerationStats()
    stream = engine.generate(GenerationRequest(prompt=PROMPT, max_tokens=500, end_id=-1), stats)
    for _ in range(3):
        next(stream)
    stream.close()
    assert stats.finish_reason == "cancelled" and stats.generated_tokens <= 4
    assert not any(slot.busy for slot in engine._slots)


def test_adapter_changes_output_and_does_not_stick(engine):
    from tests.conftest import TEST_ADAPTER

    base, _ = run(engine, max_tokens=16)
    adapted, _ = run(engine, max_tokens=16, lora_name=TEST_ADAPTER)
    again, _ = run(engine, max_tokens=16)
    assert adapted != base and again == base
    with pytest.raises(RequestError, match="unknown LoRA adapter 'ghost'"):
        run(engine, max_tokens=2, lora_name="ghost")
    with pytest.raises(RequestError, match="not a valid adapter name"):
        run(engine, max_tokens=2, lora_name="../../etc/passwd")


def test_template_and_special_tokens_come_from_the_weights(engine):
    assert "<|im_start|>" in engine.chat_template()
    assert engine.special_tokens()["eos_token"] == "<|im_end|>"


def test_a_repetition_penalty_reaches_llama_cpp(engine):
    prompt = "<|im_start|>user\nSay no again and again.<|im_end|>\n<|im_start|>assistant\nno no no no no no"
    plain = "".join(engine.generate(GenerationRequest(prompt=prompt, max_tokens=16)))
    penalised = "".join(engine.generate(GenerationRequest(prompt=prompt, max_tokens=16, repetition_penalty=1.8)))
    assert plain.split().count("no") > penalised.split().count("no")
