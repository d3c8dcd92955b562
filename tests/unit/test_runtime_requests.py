"""Triton input tensors -> typed requests, with clear errors (no server)."""

import numpy as np
import pytest

from spark_runtime.errors import RequestError
from spark_runtime.requests import (
    MAX_GRAMMAR_CHARS,
    parse_generation,
    parse_speech,
    parse_text_prefix,
    parse_transcriptions,
)


def b(text: str) -> np.ndarray:
    return np.array([[text.encode()]], dtype=object)


def test_generation_request_with_the_tensorrt_llm_names():
    request, stream, exclude = parse_generation(
        {
            "text_input": b("hello"),
            "max_tokens": np.array([[12]], np.int32),
            "stream": np.array([[True]]),
            "temperature": np.array([[0.7]], np.float32),
            "top_k": np.array([[40]], np.int32),
            "stop_words": np.array([[b"<|im_end|>", b""]], dtype=object),
            "lora_name": b(" pirate "),
        }
    )
    assert (request.prompt, request.max_tokens, request.top_k, request.lora_name) == ("hello", 12, 40, "pirate")
    assert request.stop_words == ("<|im_end|>",) and stream and exclude
    assert request.temperature == pytest.approx(0.7)


def test_sampling_penalties_use_the_ensemble_names_and_have_bounds():
    request, _, _ = parse_generation(
        {
            "text_input": b("x"),
            "repetition_penalty": np.array([[1.3]], np.float32),
            "presence_penalty": np.array([[0.5]], np.float32),
            "frequency_penalty": np.array([[-0.25]], np.float32),
        }
    )
    assert request.repetition_penalty == pytest.approx(1.3) and request.presence_penalty == pytest.approx(0.5)
    assert request.frequency_penalty == pytest.approx(-0.25)
    with pytest.raises(RequestError, match="presence_penalty"):
        parse_generation({"text_input": b("x"), "presence_penalty": np.array([[3.0]], np.float32)})
    defaults, _, _ = parse_generation({"text_input": b("x")})
    assert (defaults.repetition_penalty, defaults.presence_penalty, defaults.frequency_penalty) == (1.0, 0.0, 0.0)


def test_generation_defaults_are_greedy_and_non_streaming():
    request, stream, _ = parse_generation({"text_input": b("x"), "max_tokens": np.array([[1]], np.int32)})
    assert request.temperature == 0 and request.lora_name is None and not stream


def test_a_grammar_is_passed_as_written_and_empty_means_none():
    gbnf = 'root ::= "collect(block=" blk ")"\nblk ::= "oak_log" | "stone"\n'
    request, _, _ = parse_generation({"text_input": b("x"), "grammar": b(gbnf)})
    assert request.grammar == gbnf
    assert parse_generation({"text_input": b("x")})[0].grammar is None  # clients that never send one
    for blank in ("", " \n\t"):
        assert parse_generation({"text_input": b("x"), "grammar": b(blank)})[0].grammar is None


def test_bad_words_are_a_list_of_strings_with_limits():
    words = np.array([[b"not sure what", b"", b"a topic of debate"]], dtype=object)
    request, _, _ = parse_generation({"text_input": b("x"), "bad_words": words})
    assert request.bad_words == ("not sure what", "a topic of debate")  # empty strings are nothing
    assert parse_generation({"text_input": b("x")})[0].bad_words == ()
    too_many = np.array([[b"w"] * 1025], dtype=object)
    with pytest.raises(RequestError, match="bad_words: 1025 strings; the limit is 1024"):
        parse_generation({"text_input": b("x"), "bad_words": too_many})
    with pytest.raises(RequestError, match="bad_words: a string of 201 characters"):
        parse_generation({"text_input": b("x"), "bad_words": np.array([[b"w" * 201]], dtype=object)})
    with pytest.raises(RequestError, match="bad_words: contains a NUL"):
        parse_generation({"text_input": b("x"), "bad_words": np.array([[b"a\0b"]], dtype=object)})


def test_a_request_may_name_its_prompt_steps_within_bounds():
    def chunk(value: int) -> int:
        return parse_generation({"text_input": b("x"), "prefill_chunk": np.array([[value]], dtype=np.int32)})[
            0
        ].prefill_chunk

    assert parse_generation({"text_input": b("x")})[0].prefill_chunk == 0  # the engine's own
    assert (chunk(0), chunk(8), chunk(16), chunk(512)) == (0, 8, 16, 512)
    with pytest.raises(RequestError, match="prefill_chunk: 4 tokens a step is too few; use 0 or 8-512"):
        chunk(4)
    with pytest.raises(RequestError, match=r"prefill_chunk: must be within \[0, 512\]"):
        chunk(513)


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        (np.array([[b"\xff"]], dtype=object), "grammar: not valid UTF-8"),
        (b("a" * (MAX_GRAMMAR_CHARS + 1)), f"the limit is {MAX_GRAMMAR_CHARS}"),
        (b('root ::= "a"\0 | "b"'), "grammar: contains a NUL character"),
        (np.array([[b"root ::= x"], [b"root ::= y"]], dtype=object), "grammar: expected one value"),
    ],
)
def test_bad_grammar_inputs(grammar, message):
    with pytest.raises(RequestError, match=message):
        parse_generation({"text_input": b("x"), "grammar": grammar})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "text_input is required"),
        ({"text_input": b("")}, "empty"),
        ({"text_input": np.array([[b"\xff"]], dtype=object)}, "UTF-8"),
        ({"text_input": b("x"), "max_tokens": np.array([[0]], np.int32)}, "max_tokens"),
        ({"text_input": b("x"), "temperature": np.array([[np.nan]], np.float32)}, "temperature"),
        ({"text_input": np.array([[b"a"], [b"b"]], dtype=object)}, "one value"),
    ],
)
def test_bad_generation_inputs(inputs, message):
    with pytest.raises(RequestError, match=message):
        parse_generation(inputs)


def test_speech_request_and_limits():
    request = parse_speech({"target_text": b("Hi."), "voice": b("joe"), "speed": np.array([[1.25]], np.float32)})
    assert (request.text, request.voice, request.speed) == ("Hi.", "joe", 1.25)
    with pytest.raises(RequestError, match="speed"):
        parse_speech({"target_text": b("Hi."), "speed": np.array([[9.0]], np.float32)})
    with pytest.raises(RequestError, match="at most"):
        parse_speech({"target_text": b("a" * 5000)})


def test_whisper_prefix_is_understood():
    assert parse_text_prefix("<|startoftranscript|><|en|><|transcribe|><|notimestamps|>") == ("en", "transcribe", None)
    assert parse_text_prefix("<|de|><|translate|>Names: Spark") == ("de", "translate", "Names: Spark")
    with pytest.raises(RequestError, match="unknown special token"):
        parse_text_prefix("<|what is this|>")


def test_transcription_batch_with_lengths():
    wav = np.zeros((2, 16000), np.float32)
    requests = parse_transcriptions({"WAV": wav, "WAV_LENS": np.array([[8000], [16000]], np.int32)})
    assert [len(r.audio) for r in requests] == [8000, 16000]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"WAV": np.zeros((1, 10), np.int16)}, "float32"),
        ({"WAV": np.zeros((1, 0), np.float32)}, "empty"),
        ({"WAV": np.zeros((1, 2, 3), np.float32)}, "mono"),
        ({"WAV": np.full((1, 10), 300.0, np.float32)}, "integer PCM"),
        ({"WAV": np.zeros((1, 10), np.float32), "SAMPLE_RATE": np.array([[8000]], np.int32)}, "16000 Hz"),
        ({"WAV": np.zeros((1, 10), np.float32), "WAV_LENS": np.array([[11]], np.int32)}, "outside"),
        ({"WAV": np.array([[np.inf]], np.float32)}, "NaN or infinite"),
    ],
)
def test_bad_audio_is_rejected_with_a_reason(inputs, message):
    with pytest.raises(RequestError, match=message):
        parse_transcriptions(inputs)
