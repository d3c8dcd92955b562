"""The llama.cpp engine in-process on the packaged SmolLM2 GGUF (no server)."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
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


YES_NO = 'root ::= ("yes" | "no")'
CALL = 'root ::= "collect(block=" blk ", count=" [1-9] ")"\nblk ::= "oak_log" | "stone"'


def test_a_grammar_constrains_the_answer_and_ends_it(engine):
    text, stats = run(engine, max_tokens=16, grammar=YES_NO)
    assert text in ("yes", "no") and stats.finish_reason == "stop"
    call, stats = run(engine, max_tokens=64, grammar=CALL, temperature=0.9, seed=7)
    assert re.fullmatch(r"collect\(block=(oak_log|stone), count=[1-9]\)", call), call
    assert stats.finish_reason == "stop"
    # a complete grammar leaves only the end token: it ends the answer even when end_id says never
    forced, _ = run(engine, max_tokens=16, grammar=YES_NO, end_id=-1)
    assert forced in ("yes", "no")


def test_a_grammar_that_allows_the_models_own_answer_changes_nothing(engine):
    free, free_stats = run(engine, max_tokens=24)
    allowed, stats = run(engine, max_tokens=24, grammar="root ::= [^\\x00]*")
    assert allowed == free
    assert (stats.generated_tokens, stats.finish_reason) == (free_stats.generated_tokens, free_stats.finish_reason)


def test_max_tokens_and_stop_words_still_apply_under_a_grammar(engine):
    cut, stats = run(engine, max_tokens=3, grammar=CALL)
    assert stats.finish_reason == "length" and stats.generated_tokens == 3 and "collect(block=".startswith(cut)
    stopped, stats = run(engine, max_tokens=64, grammar=CALL, stop_words=("block",))
    assert stopped == "collect(" and stats.finish_reason == "stop"


def test_a_grammar_is_parsed_once_and_each_request_starts_from_its_beginning(engine):
    before = engine.grammars.parsed
    answers = {run(engine, max_tokens=64, grammar=CALL)[0] for _ in range(3)}
    # the parse state is copied per request: a state shared between requests would refuse the
    # second answer from its first character on
    assert len(answers) == 1 and next(iter(answers)).startswith("collect(")
    assert engine.grammars.parsed - before <= 1  # at most the first of them parsed it


def test_the_grammar_cache_keeps_the_most_recently_used_texts(engine):
    from spark_runtime.engines.llama_grammar import GrammarCache

    cache = GrammarCache(engine._lib, engine._slots[0].llama._model.vocab, size=2)
    try:
        for text in ('root ::= "a"', 'root ::= "b"', 'root ::= "a"', 'root ::= "c"', 'root ::= "a"'):
            cache.guide(text).close()
        assert len(cache) == 2 and cache.parsed == 3  # "b" was dropped for "c"; "a" stayed, in use
        cache.guide('root ::= "b"').close()
        assert cache.parsed == 4
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ('root ::= "a" |(', "grammar: expecting ')' at the end"),
        ('foo ::= "x"', "grammar: grammar does not contain a 'root' symbol"),
        # parses, but no token can produce a NUL: llama.cpp would abort the process at that step
        ('root ::= "ok" "\\x00"', "grammar: no token can continue it after 'ok'"),
        ("root ::= [^\\x00-\\U0010FFFF]", "grammar: no token can continue it after ''"),
    ],
)
def test_a_bad_grammar_fails_its_request_only(engine, grammar, message):
    with pytest.raises(RequestError) as failure:
        run(engine, max_tokens=16, grammar=grammar)
    assert str(failure.value).startswith(message)
    assert not any(slot.busy for slot in engine._slots) and not any(slot.llama.guide for slot in engine._slots)
    text, _ = run(engine, max_tokens=4)
    assert text.strip()


LONG = (
    "<|im_start|>system\nYou are Spark, a cheerful streamer.<|im_end|>\n<|im_start|>user\n"
    + " ".join(f"viewer{i} says: what is your favourite thing number {i}?" for i in range(30))
    + "<|im_end|>\n<|im_start|>assistant\n"
)


def test_a_long_prompt_is_read_in_chunks_and_a_cancel_stops_it_within_one(engine):
    """A prompt is read `prefill_chunk` tokens per step with an empty delta between steps, so
    closing the stream (the server's cancel) stops it after the chunk being read, not after the
    whole prompt: a memory write cut short for a viewer's turn gives the cores back at once."""
    chunk = engine._prefill_chunk
    tokens = engine.tokenize(LONG)
    assert chunk > 0 and len(tokens) > 4 * chunk
    stats = GenerationStats()
    stream = engine.generate(GenerationRequest(prompt=LONG, max_tokens=8, end_id=-1), stats)
    assert next(stream) == ""  # one chunk read, nothing generated yet
    (slot,) = [s for s in engine._slots if s.busy]
    read = slot.llama.n_tokens
    assert 0 < read - stats.reused_prompt_tokens <= chunk and read < len(tokens) - chunk
    stream.close()
    assert stats.finish_reason == "cancelled" and stats.generated_tokens == 0
    assert slot.llama.n_tokens == read and not slot.busy  # nothing more was read


def _forget_everything(engine) -> None:
    for slot in engine._slots:
        slot.llama.reset()
        engine._lib.llama_memory_clear(engine._lib.llama_get_memory(slot.llama._ctx.ctx), True)


def test_cut_work_stops_inside_the_step_it_is_in_and_keeps_what_was_read_before(engine):
    """Work a turn may cut (it names its prompt steps) has llama.cpp abort the step in progress
    once its cancel is set, here a read of the whole prompt in one step, which closing the stream
    could only stop after. The slot keeps what was read before that request, and the next request
    on the same prompt answers as if no abort had happened."""
    request = GenerationRequest(prompt=LONG, max_tokens=8, end_id=-1)
    expected = "".join(engine.generate(request))
    _forget_everything(engine)
    half = LONG[: len(LONG) // 2]
    list(engine.generate(GenerationRequest(prompt=half, max_tokens=1)))  # a slot holds the first half
    cached = len(engine.tokenize(half)) - 1
    cancelled = threading.Event()
    cancelled.set()  # already cut: without the abort the engine would only notice at its first delta
    stats = GenerationStats()
    whole_in_one_step = replace(request, prefill_chunk=4 * len(engine.tokenize(LONG)))
    assert list(engine.generate(whole_in_one_step, stats, cancelled)) == []
    assert stats.finish_reason == "cancelled" and stats.generated_tokens == 0
    assert not any(slot.busy or slot.cancelled for slot in engine._slots)
    again = GenerationStats()
    assert "".join(engine.generate(request, again)) == expected
    assert again.reused_prompt_tokens >= cached  # the first half was still cached, nothing else


def test_a_request_a_viewer_waits_on_is_not_aborted_inside_a_step(engine):
    """Without prompt steps of its own a request runs without the abort callback (it takes the GIL
    at every node of the compute graph): a cancel reaches it between steps, when its stream is
    closed."""
    cancelled = threading.Event()
    cancelled.set()
    stats = GenerationStats()
    text = "".join(engine.generate(GenerationRequest(prompt=PROMPT, max_tokens=4, end_id=-1), stats, cancelled))
    assert stats.generated_tokens == 4 and text.strip()


def test_a_prompt_read_in_chunks_gives_the_same_answer_as_one_step(engine_dir: Path):
    from spark_runtime.engines import load_engine

    one = load_engine(engine_dir / "llm", slots=1, threads=2, prefill_chunk=0)
    try:
        whole = "".join(one.generate(GenerationRequest(prompt=LONG, max_tokens=24, end_id=-1)))
    finally:
        one.close()
    chunked = load_engine(engine_dir / "llm", slots=1, threads=2, prefill_chunk=16)
    try:
        stats = GenerationStats()
        deltas = list(chunked.generate(GenerationRequest(prompt=LONG, max_tokens=24, end_id=-1), stats))
        n_prompt = len(chunked.tokenize(LONG))
    finally:
        chunked.close()
    assert stats.prefill_tokens == n_prompt and stats.generated_tokens == 24
    assert deltas[: stats.prefill_tokens // 16 - 1] == [""] * (stats.prefill_tokens // 16 - 1)
    assert "".join(deltas) == whole and whole.strip()


def test_a_request_may_ask_for_smaller_prompt_steps(engine):
    """The engine reads a prompt in steps and a cancel reaches the request between them (an empty
    delta marks each); a memory write asks for 16-token steps so that a viewer's turn that cuts it
    waits for less. The answer is the same whatever the steps."""
    prompt = (
        "<|im_start|>user\n" + " ".join(f"item{i}" for i in range(80)) + "\nName three colours.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    def steps_and_text(chunk: int) -> tuple[int, str]:
        _forget_everything(engine)  # nothing cached: the whole prompt is read
        deltas = list(
            engine.generate(GenerationRequest(prompt=prompt, max_tokens=8, prefill_chunk=chunk), GenerationStats())
        )
        first = next(i for i, d in enumerate(deltas) if d)
        return first, "".join(deltas)

    default_steps, default_text = steps_and_text(0)
    small_steps, small_text = steps_and_text(16)
    tokens = len(engine.tokenize(prompt))
    assert default_steps == -(-(tokens - 1) // 64) and small_steps == -(-(tokens - 1) // 16)
    assert small_text == default_text
