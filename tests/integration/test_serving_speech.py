"""The `tts` and `stt` models through the real tritonserver over gRPC."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from tests.triton_helpers import StreamClient, metric, tensor

pytestmark = pytest.mark.server

LONG_LAST = (
    "Then we wandered through the quiet market where the old baker was selling warm bread, "
    "the painter was packing up his colourful canvases, and the children were chasing each other "
    "between the stalls until the sun went down behind the hills and everybody went home."
)
FOUR_SENTENCES = f"Hi there. The weather is lovely today. We should go outside. {LONG_LAST}"


def speak(url: str, text: str, **extra) -> tuple[list[tuple[float, np.ndarray]], int, float, str | None]:
    inputs = [tensor("target_text", [[text.encode()]], "BYTES")]
    if "voice" in extra:
        inputs.append(tensor("voice", [[extra["voice"].encode()]], "BYTES"))
    if "speed" in extra:
        inputs.append(tensor("speed", [[extra["speed"]]], "FP32"))
    if "normalize" in extra:
        inputs.append(tensor("normalize", [[extra["normalize"]]], "BOOL"))
    client = StreamClient(url)
    try:
        result = client.run("tts", inputs)
    finally:
        client.close()
    chunks = [(at, r.as_numpy("waveform").reshape(-1)) for at, r in result.responses]
    rate = int(result.responses[0][1].as_numpy("sample_rate").reshape(-1)[0]) if result.responses else 0
    return chunks, rate, result.started, result.error


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    n = int(round(len(audio) * 16_000 / rate))
    return np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)


def transcribe(url: str, audio: np.ndarray, **extra) -> tuple[str | None, str | None]:
    inputs = [tensor("WAV", audio[np.newaxis, :], extra.pop("dtype", "FP32"))]
    if "rate" in extra:
        inputs.append(tensor("SAMPLE_RATE", [[extra.pop("rate")]], "INT32"))
    if "prefix" in extra:
        inputs.append(tensor("TEXT_PREFIX", [[extra.pop("prefix").encode()]], "BYTES"))
    client = StreamClient(url)
    try:
        result = client.run("stt", inputs, timeout=120)
    finally:
        client.close()
    if result.error:
        return None, result.error
    return result.texts("TRANSCRIPTS")[0], None


def test_first_chunk_arrives_before_the_last_sentence_is_synthesised(triton):
    chunks, rate, started, error = speak(triton.grpc_url, FOUR_SENTENCES)
    assert error is None and rate == 22050
    assert len(chunks) >= 4
    # How long the server needs for the last sentence on its own: if it sent nothing before
    # finishing everything, all chunks would arrive together.
    _, _, alone_started, _ = last_alone = speak(triton.grpc_url, LONG_LAST)
    last_alone_s = last_alone[0][-1][0] - alone_started
    first_at, last_at = chunks[0][0], chunks[-1][0]
    assert last_at - first_at > 0.5 * last_alone_s, (first_at - started, last_at - started, last_alone_s)
    assert all(np.abs(c).max() <= 1.0 for _, c in chunks)


def test_tts_output_transcribes_back_with_low_word_error_rate(triton):
    text = "Hello chat, thank you for the follow. Today we are going to build a castle together."
    chunks, rate, _, error = speak(triton.grpc_url, text)
    assert error is None
    audio = to_16k(np.concatenate([c for _, c in chunks]), rate)
    transcript, error = transcribe(triton.grpc_url, audio)
    assert error is None
    normalise = jiwer.Compose(
        [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
    )
    wer = jiwer.wer(normalise(text), normalise(transcript))
    assert wer < 0.15, (transcript, wer)


def test_speed_changes_duration(triton):
    normal, rate, _, _ = speak(triton.grpc_url, "This is a test of speaking speed.")
    fast, _, _, _ = speak(triton.grpc_url, "This is a test of speaking speed.", speed=1.5)
    assert sum(len(c) for _, c in fast) < 0.85 * sum(len(c) for _, c in normal)


@pytest.mark.parametrize("text", ["", "   ", "!!! ... ???"])
def test_empty_or_unspeakable_text_gives_a_clean_empty_stream(triton, text):
    chunks, _, _, error = speak(triton.grpc_url, text)
    assert error is None and chunks == []


def heard(url: str, text: str, **extra) -> str:
    chunks, rate, _, error = speak(url, text, **extra)
    assert error is None and chunks
    transcript, error = transcribe(url, to_16k(np.concatenate([c for _, c in chunks]), rate))
    assert error is None and transcript is not None
    return " ".join(jiwer.RemovePunctuation()(transcript.lower()).split())


def test_chat_is_spoken_as_words_not_as_written(triton):
    """The `tts` model normalises text before it speaks (spark_runtime/normalise): a listener
    hears the name behind a handle, never the emote, and numbers as words."""
    line = "Thanks @CoolCat99 for the raid KEKW, see you at 7:30!"
    normalised = metric(triton.metrics_url, "spark_tts_normalised_total", model="tts")
    said = heard(triton.grpc_url, line)
    assert "cool cat" in said.replace("coolcat", "cool cat") and "kekw" not in said and "99" not in said
    assert metric(triton.metrics_url, "spark_tts_normalised_total", model="tts") == normalised + 1  # the 7:30
    as_written = heard(triton.grpc_url, line, normalize=False)
    assert "99" in as_written or "ninety" in as_written  # what the handle sounds like unread
    heard(triton.grpc_url, "Hello chat, how are you today?")  # plain words: no grammars
    assert metric(triton.metrics_url, "spark_tts_normalised_total", model="tts") == normalised + 1


def test_captions_show_the_line_as_written_while_the_voice_says_it_normalised(triton):
    """The words of the `timing` output are the written ones: "$5" starts where "five" plays,
    a handle as typed, the emote nobody says beside its neighbour."""
    import json

    line = "Thanks @CoolCat99 for the $5 KEKW, see you at 7:30!"
    inputs = [tensor("target_text", [[line.encode()]], "BYTES"), tensor("timing", [[True]], "BOOL")]
    client = StreamClient(triton.grpc_url)
    try:
        result = client.run("tts", inputs)
    finally:
        client.close()
    assert result.error is None and result.responses
    timings = [json.loads(r.as_numpy("timing").reshape(-1)[0]) for _, r in result.responses]
    words = [w for t in timings for w in t["words"]]
    assert " ".join(w["text"] for w in words).split() == line.split()
    assert all(w["start"] < w["end"] for w in words)
    # "$5" lasts while "five dollars" plays: its phonemes run from the f to the z
    (timing,) = [t for t in timings if any(w["text"].startswith("$5") for w in t["words"])]
    (five,) = [w for w in timing["words"] if w["text"].startswith("$5")]  # "$5 KEKW,": the emote goes with it
    said = [p["text"] for p in timing["phonemes"] if five["start"] <= p["start"] < five["end"]]
    assert said[0] == "f" and said[-1] == "z", said


def test_a_line_of_only_emotes_is_silence(triton):
    chunks, _, _, error = speak(triton.grpc_url, "KEKW KEKW LUL")
    assert error is None and chunks == []
    chunks, _, _, error = speak(triton.grpc_url, "KEKW KEKW LUL", normalize=False)
    assert error is None and chunks  # as written, the voice spells it out


def test_unknown_voice_is_an_error_and_the_server_keeps_serving(triton):
    chunks, _, _, error = speak(triton.grpc_url, "Hello.", voice="nobody")
    assert error is not None and "unknown voice 'nobody'" in error and "joe" in error
    chunks, _, _, error = speak(triton.grpc_url, "Hello.")
    assert error is None and chunks


def test_stt_rejects_bad_audio_clearly(triton):
    tone = (0.3 * np.sin(np.linspace(0, 2000, 16_000))).astype(np.float32)
    _, error = transcribe(triton.grpc_url, tone, rate=44_100)
    assert error and "16000 Hz" in error
    _, error = transcribe(triton.grpc_url, (tone * 32767).astype(np.float32))
    assert error and "[-1, 1]" in error
    _, error = transcribe(triton.grpc_url, tone, prefix="<|startoftranscript|><|bogus token|>")
    assert error and "TEXT_PREFIX" in error
    _, error = transcribe(triton.grpc_url, tone.astype(np.float64), dtype="FP64")  # refused by Triton itself
    assert error and "FP64" in error
    # and it still serves: silence passes the VAD as nothing
    transcript, error = transcribe(triton.grpc_url, np.zeros(16_000, dtype=np.float32))
    assert error is None and transcript == ""
