"""What speech does to the stream (turns/voice.py) and the player's pause: a person speaking over
a persona pauses it at once and keeps its audio; words cut it off and are answered next (marked
as cutting in); a backchannel, a cough or the persona's own voice resume it where it stopped."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spark_client.events import VOICE_SOURCE, ChatMessage, Priority
from spark_client.sources.mic.listener import SpeechOnset, Utterance
from spark_client.speech.playback import PlaybackItem, Player
from spark_client.turns.prompt import DEFAULT_PROMPT_STYLE
from spark_client.turns.queue import ChatQueue
from spark_client.turns.voice import Outcome, VoiceOptions, VoiceTurns, classify

from tests.timing import seconds

RATE = 8000


def scenario(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test body in its own event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.mark.parametrize(
    ("text", "speech_ms", "speaking", "said", "expected"),
    [
        ("", 900, True, "", Outcome.NO_WORDS),
        ("Thank you.", 400, True, "", Outcome.NO_WORDS),  # Whisper's word for a breath
        ("Yeah.", 350, True, "", Outcome.BACKCHANNEL),
        ("Mm-hm, right.", 550, True, "", Outcome.BACKCHANNEL),
        ("Yeah.", 350, False, "", Outcome.TURN),  # nobody talks: "yeah" answers the persona
        ("Yeah, but what about the dragon?", 1500, True, "", Outcome.TURN),
        ("Stop.", 300, True, "", Outcome.TURN),  # short, but not a backchannel
        (
            "the brave little robot found a key",
            1800,
            True,
            "Once upon a time the brave little robot found a key.",
            Outcome.ECHO,
        ),
        (
            "what is your favourite colour",
            1500,
            True,
            "Once upon a time the brave little robot found a key.",
            Outcome.TURN,
        ),
    ],
)
def test_classify(text, speech_ms, speaking, said, expected):
    assert classify(text, speech_ms=speech_ms, persona_speaking=speaking, persona_said=said) == expected


@given(st.text(max_size=60), st.floats(0, 20000), st.booleans(), st.text(max_size=120))
def test_classify_always_answers_with_an_outcome(text, speech_ms, speaking, said):
    outcome = classify(text, speech_ms=speech_ms, persona_speaking=speaking, persona_said=said)
    assert outcome in {Outcome.NO_WORDS, Outcome.ECHO, Outcome.BACKCHANNEL, Outcome.TURN}
    if outcome == Outcome.BACKCHANNEL:
        assert speaking


def test_the_personas_voice_is_known_by_its_sound_when_speech_to_text_mishears_it():
    said = "Mika! I'm so glad you asked. Stay sparky!"
    # "Mika!" through the speakers, heard by Whisper as "My head!": no word in common
    assert classify("My head!", speech_ms=320, persona_speaking=True, persona_said=said) == Outcome.TURN

    def heard(text: str, mic: float, cleaned: float) -> str:
        return classify(
            text,
            speech_ms=320,
            persona_speaking=True,
            persona_said=said,
            echo_likeness=mic,
            echo_likeness_cleaned=cleaned,
        )

    # its sound follows the playback, before and after the echo canceller (not converged yet)
    assert heard("My head!", 0.86, 0.55) == Outcome.ECHO
    # the streamer over a loud echo: the microphone follows the playback, the canceller's output does not
    assert heard("what was the name of that robot", 0.86, 0.08) == Outcome.TURN
    # the streamer alone
    assert heard("what was the name of that robot", 0.05, 0.04) == Outcome.TURN


class FakeLoop:
    def __init__(self, turn: int | None = 1, said: str = "") -> None:
        self.current_turn = turn
        self.said = said

    def recent_speech(self, since: float) -> str:
        return self.said


def utterance(text: str, speech_ms: float = 1200.0) -> Utterance:
    now = asyncio.get_running_loop().time()
    return Utterance(text, now - 1.5, now - 0.5, speech_ms, now, 120.0, 1.7)


async def playing_player(seconds_of_audio: float = 3.0) -> tuple[Player, asyncio.Task[None]]:
    player = Player(None, block_ms=20)
    task = asyncio.create_task(player.run())
    player.enqueue(PlaybackItem(1, 0, np.full(int(RATE * seconds_of_audio), 0.1, np.float32), RATE))
    await asyncio.sleep(0.05)  # a couple of blocks played
    assert player.first_audio_at.get(1) is not None
    return player, task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@scenario
async def test_pause_stops_within_two_blocks_keeps_the_audio_and_resume_plays_on():
    player, task = await playing_player()
    try:
        await asyncio.sleep(0.1)
        player.pause()
        played = player.progress[(1, 0)].played
        await asyncio.sleep(0.2)
        assert player.progress[(1, 0)].played - played <= 2 * RATE // 50  # at most two 20 ms blocks
        assert player.stopped_at is not None and player.stopped_at - player.paused_at < 0.05
        assert player.speaking() and player.paused
        player.resume()
        await asyncio.wait_for(player.drain(1), timeout=seconds(10))
        assert player.progress[(1, 0)].played == player.progress[(1, 0)].queued  # nothing lost
    finally:
        await stop(task)


@scenario
async def test_words_over_a_persona_cut_it_off_and_are_answered_next_as_cutting_in():
    player, task = await playing_player()
    queue = ChatQueue()
    records: list[dict] = []
    voice = VoiceTurns(queue=queue, player=player, loop=FakeLoop(turn=1), record=records.append)
    mark = queue.interrupt_mark()
    try:
        now = asyncio.get_running_loop().time()
        voice.speech_started(SpeechOnset(now - 0.08, now))
        assert player.paused
        voice.speech_ended(now + 1.0)
        await asyncio.sleep(0.1)  # the words are still being spoken, then transcribed
        await voice.heard(utterance("Wait, what about the dragon?"))
        await asyncio.wait_for(queue.wait_interrupt(mark), timeout=1)  # the running turn is told to stop
        request = await asyncio.wait_for(queue.next_turn(), timeout=1)
        assert request is not None
        message = request.answer
        assert message.source == VOICE_SOURCE and message.user == "streamer" and message.cut_in
        assert message.priority is Priority.INTERRUPT
        assert "cutting you off" in DEFAULT_PROMPT_STYLE.chat(message)
        assert not player.paused  # what follows can play; the cut turn's audio was dropped
        await asyncio.sleep(0.1)
        assert not player.speaking()
        assert records[-1]["outcome"] == Outcome.TURN and records[-1]["cut_in"]
        assert records[-1]["stopped_at"] is not None
    finally:
        await stop(task)


@pytest.mark.parametrize(("text", "said"), [("Yeah.", ""), ("", ""), ("robot found a key", "The robot found a key.")])
@scenario
async def test_a_backchannel_noise_or_the_personas_own_voice_resume_it_where_it_stopped(text, said):
    player, task = await playing_player(1.0)
    queue = ChatQueue()
    voice = VoiceTurns(queue=queue, player=player, loop=FakeLoop(turn=1, said=said))
    try:
        now = asyncio.get_running_loop().time()
        voice.speech_started(SpeechOnset(now - 0.08, now))
        played = player.progress[(1, 0)].played
        await voice.heard(utterance(text, speech_ms=400))
        assert not player.paused and queue.pending == 0
        await asyncio.wait_for(player.drain(1), timeout=seconds(10))
        progress = player.progress[(1, 0)]
        assert progress.played == progress.queued and progress.played > played  # it went on to the end
    finally:
        await stop(task)


@scenario
async def test_a_cough_the_vad_discards_resumes_and_speech_in_silence_does_not_pause():
    player, task = await playing_player(1.0)
    queue = ChatQueue()
    loop = FakeLoop()
    voice = VoiceTurns(queue=queue, player=player, loop=loop)
    try:
        now = asyncio.get_running_loop().time()
        voice.speech_started(SpeechOnset(now, now))
        assert player.paused
        voice.speech_discarded()
        assert not player.paused
        await asyncio.wait_for(player.drain(1), timeout=seconds(10))
        player.forget(1)
        voice.speech_started(SpeechOnset(now, now))  # the turn is still being recorded: it holds
        assert player.paused
        voice.speech_discarded()
        loop.current_turn = None
        voice.speech_started(SpeechOnset(now, now))  # nobody talks and no turn runs: nothing to pause
        assert not player.paused
        await voice.heard(utterance("Spark, what game should we play?"))
        request = await asyncio.wait_for(queue.next_turn(), timeout=1)
        assert request is not None and not request.answer.cut_in and request.answer.priority is Priority.HIGH
    finally:
        await stop(task)


@scenario
async def test_without_barge_in_speech_only_queues_an_answer():
    player, task = await playing_player(1.0)
    queue = ChatQueue()
    voice = VoiceTurns(queue=queue, player=player, loop=FakeLoop(), options=VoiceOptions(barge_in=False))
    try:
        now = asyncio.get_running_loop().time()
        voice.speech_started(SpeechOnset(now, now))
        assert not player.paused
        await voice.heard(utterance("Spark, what game should we play?"))
        assert queue.pending == 1
    finally:
        await stop(task)


def test_a_typed_chat_line_is_not_marked_as_speech():
    line = DEFAULT_PROMPT_STYLE.chat(ChatMessage("twitch", "mika", "hi"))
    assert "speaking" not in line
