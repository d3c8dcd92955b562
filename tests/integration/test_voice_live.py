"""Voice end to end: `spark-client live --mic-file` against the real server, with speech that our
TTS did not make (espeak-ng). The streamer's question is transcribed and answered; a "yeah" while
the persona talks does not cut it off; words spoken over the persona stop it (the server's
streams are cancelled) and are answered; with the session's playback mixed back into the
"microphone" no turn is ever started by the persona's own voice; a machine without a microphone
(this one) gets one clear message and the chat goes on."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from perf import live_client
from perf.voice_corpus import SpokenLine, espeak_available, speak, speech_bounds
from tests.fakes.personas import write_personas
from tests.timing import seconds
from tests.triton_helpers import metric

pytestmark = [pytest.mark.server, pytest.mark.e2e]


@pytest.fixture
def espeak() -> None:
    """Speech our TTS did not make comes from espeak-ng (Debian's package)."""
    if (why := espeak_available()) is not None:
        pytest.skip(why)


# Two long example answers make even the packaged 135M model answer with a long story.
STORIES = [
    {
        "user": "mika",
        "message": "tell us a story!",
        "answer": "[happy] Oh, I love this one! Once upon a time a tiny robot named Bolt lived in a junkyard by "
        "the sea. Every night Bolt climbed the tallest pile of scrap to watch the ships sail past. One stormy "
        "evening the lighthouse went dark, so Bolt rolled all the way down to the shore with a flashlight in "
        "its claw. It blinked the light until dawn, and every ship found its way home. From then on the sailors "
        "called Bolt the little lighthouse, and Bolt never felt small again.",
    },
    {
        "user": "Rin_7",
        "message": "what happened to the dragon?",
        "answer": "[excited] Gather round, chat! Long ago a young dragon named Ember was afraid of her own fire. "
        "The other dragons laughed whenever she sneezed sparks. One winter the whole valley froze, and the "
        "villagers could not light a single candle. Ember flew from house to house and breathed the gentlest "
        "flames she could into every fireplace. By spring the village held a festival in her honour, and she "
        "was never afraid of her fire again.",
    },
]


def storyteller(folder: Path, max_tokens: int, speed: float = 1.0) -> Path:
    """One persona, greedy, that answers with a long story (about 0.3 s of speech per token at
    speed 1): there is time to talk over it."""
    return write_personas(
        folder,
        [
            {
                "name": "Spark",
                "description": "A cheerful AI VTuber who answers every message with a long, detailed story.",
                "max_sentences": 40,
                "voice": {"name": "joe", "speed": speed},
                "sampling": {"max_tokens": max_tokens, "temperature": 0.0, "repetition_penalty": 1.1},
                "examples": STORIES,
            }
        ],
    )


def story_request(folder: Path) -> Path:
    """A typed chat line (its answer does not depend on speech to text): a story of 300+ tokens,
    so the server is still generating it seconds after it starts to play."""
    script = folder / "story.jsonl"
    line = {"user": "mika", "text": "Spark, tell chat a long story about a knight and a cat.", "delay_s": 0.2}
    script.write_text(json.dumps(line) + "\n")
    return script


def run_live(triton, tmp_path: Path, args: list[str], name: str = "voice") -> tuple[list[dict], str]:
    command = live_client.live_command(triton.grpc_url, tmp_path, name, *args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds(300), check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return live_client.records(tmp_path / f"{name}.jsonl"), output


def cancelled_streams(triton) -> float:
    """LLM and TTS streams the server saw cancelled by the client."""
    return sum(metric(triton.metrics_url, "spark_requests_cancelled_total", model=m) for m in ("llm", "tts"))


# Transcribed by the packaged Whisper and answered by the packaged SmolLM2 (greedy) with ~85 words.
def test_a_spoken_question_is_transcribed_and_answered_as_the_streamers_words(triton, tmp_path, espeak):
    question = speak(SpokenLine("Spark, what game should we play next?", "en-gb", 160), tmp_path / "q.wav")
    records, output = run_live(
        triton, tmp_path, ["--mic-file", str(question), "--mic-file-at", "0.5", "--mic-file-tail", "3"]
    )
    voice = [r for r in records if r["event"] == "voice" and r["outcome"] != "discarded"]
    turns = [r for r in records if r["event"] == "turn"]
    assert [r["outcome"] for r in voice] == ["turn"] and "game" in voice[0]["text"].lower(), output
    assert not voice[0]["cut_in"] and voice[0].get("stopped_at") is None, voice[0]  # nobody was talking
    assert len(turns) == 1 and turns[0]["user"] == "streamer" and turns[0]["spoken"], output
    assert f"streamer (mic): {voice[0]['text']}" in output


def test_a_backchannel_while_the_persona_talks_does_not_cut_it_off(triton, tmp_path, espeak):
    yeah = speak(SpokenLine("yeah", "en-gb", 170), tmp_path / "yeah.wav")
    records, output = run_live(
        triton,
        tmp_path,
        [
            *("--personas", str(storyteller(tmp_path / "personas", 100)), "--script", str(story_request(tmp_path))),
            *("--mic-file", str(yeah), "--mic-file-at", "5.0", "--mic-file-tail", "1"),
        ],
    )
    voice = [r for r in records if r["event"] == "voice" and r["outcome"] != "discarded"]
    turns = [r for r in records if r["event"] == "turn"]
    assert [r["outcome"] for r in voice] == ["backchannel"], output
    assert voice[0]["stopped_at"] is not None, voice[0]  # it paused for the "yeah", then went on
    assert len(turns) == 1, output
    story = turns[0]
    assert not story["interrupted"] and not story["failed"], story
    assert len(story["spoken"].split()) > 40, story  # the whole story was told, not cut at the "yeah"


def test_talking_over_the_persona_stops_it_cancels_its_streams_and_is_answered(triton, tmp_path, espeak):
    cut = speak(SpokenLine("Stop!", "en-us+f3", 170, 60), tmp_path / "cut.wav")
    before = cancelled_streams(triton)
    # The story has played for a couple of seconds and is still being generated when the words
    # begin (300 tokens: ~4 s of decoding on 2 cores). The answer to "Stop!" is a story too, as
    # long as the model likes: at twice the speed, 300 tokens are at most ~45 s of speech, which
    # keeps the test short (a greedy 1000-token story took 85 s).
    records, output = run_live(
        triton,
        tmp_path,
        [
            *("--personas", str(storyteller(tmp_path / "personas", 300, speed=2.0))),
            *("--script", str(story_request(tmp_path))),
            *("--mic-file", str(cut), "--mic-file-at", "3.0", "--mic-file-tail", "3"),
        ],
    )
    voice = [r for r in records if r["event"] == "voice" and r["outcome"] != "discarded"]
    turns = [r for r in records if r["event"] == "turn"]
    fed = [r for r in records if r["event"] == "mic_file"]
    assert [r["outcome"] for r in voice] == ["turn"], output
    assert "stop" in voice[0]["text"].lower() and voice[0]["cut_in"], voice[0]
    onset = fed[0]["start_at"] + speech_bounds(cut)[0]
    assert voice[0]["stopped_at"] is not None and voice[0]["stopped_at"] >= onset - 0.05, voice[0]
    assert len(turns) == 2, output
    story, answer = turns
    assert story["interrupted"] and len(story["spoken"].split()) < 40, story  # cut short
    assert answer["user"] == "streamer" and not answer["interrupted"] and not answer["failed"], answer
    assert cancelled_streams(triton) > before, "the interrupted answer's server streams were not cancelled"


def test_the_personas_own_voice_in_the_microphone_never_starts_a_turn(triton, tmp_path, espeak):
    script = tmp_path / "chat.jsonl"
    lines = ["hi spark, how are you today?", "what is your favourite food?", "tell me about your best friend"]
    script.write_text("".join(json.dumps({"user": "mika", "text": t, "delay_s": 0.5}) + "\n" for t in lines))
    question = speak(SpokenLine("Spark, what game should we play next?", "en-gb", 160), tmp_path / "q.wav")
    records, output = run_live(
        triton,
        tmp_path,
        [
            "--script",
            str(script),
            *("--mic-file", str(question), "--mic-file-at", "1.0"),
            "--mic-loopback",
            *("--mic-loopback-gain", "0.6", "--mic-loopback-delay-ms", "60"),
            "--mic-file-tail",
            "20",
        ],
        name="loopback",
    )
    turns = [r for r in records if r["event"] == "turn"]
    voice = [r for r in records if r["event"] == "voice"]
    assert len([t for t in turns if t["user"] == "mika" and t["spoken"]]) >= 2, output
    spoken_turns = [r for r in voice if r["outcome"] == "turn"]
    # The one turn is the streamer's question (tiny.en under the echo once heard "Spark, what game"
    # as "I'm Park, while again"): at least two of its words, which the persona's answers lack.
    heard = set(re.findall(r"[a-z]+", spoken_turns[0]["text"].lower())) if len(spoken_turns) == 1 else set()
    assert len(spoken_turns) == 1 and len(heard & {"spark", "what", "game", "play", "next"}) >= 2, voice
    assert len([t for t in turns if t["user"] == "streamer"]) == 1, output


def test_no_microphone_here_one_clear_message_and_the_chat_goes_on(triton, tmp_path):
    script = tmp_path / "chat.jsonl"
    script.write_text(json.dumps({"user": "mika", "text": "hello spark!", "delay_s": 0.2}) + "\n")
    records, output = run_live(triton, tmp_path, ["--script", str(script), "--mic", "no such microphone"], "nomic")
    assert output.count("microphone") >= 1 and output.lower().count("unavailable") == 1, output
    turns = [r for r in records if r["event"] == "turn"]
    assert turns and turns[0]["spoken"], output
