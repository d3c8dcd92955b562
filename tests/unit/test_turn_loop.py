"""The turn loop against fakes of the served models (tests/fakes/speech.py) and the real queue,
player, history and metrics: interrupts, stalls, time-outs, back-off, moderation, cancellation,
and failures of memory, metrics and listeners, none of which may end the stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from spark_client.avatar.driver import AvatarDriver
from spark_client.events import ChatMessage, ModerationEvent, ModerationKind, Priority
from spark_client.metrics import TurnMetrics
from spark_client.speech.audio import SessionWav, SoundDevice
from spark_client.speech.guards import blocked_spellings
from spark_client.speech.playback import Player
from spark_client.speech.triton import ModelCallError
from spark_client.turns.coordinator import Coordinator
from spark_client.turns.loop import LoopOptions, TurnLoop
from spark_client.turns.queue import ChatQueue

from tests.fakes.personas import quiet_duo
from tests.fakes.speech import ANSWERS, FakeTTS, RecordingMemory, ScriptedLLM
from tests.timing import seconds

FAST = LoopOptions(turn_timeout_s=seconds(10), max_backoff_s=0.05, cancel_wait_s=seconds(2))


def chat(text: str, user: str = "viewer", **kw) -> ChatMessage:
    return ChatMessage(source="test", user=user, text=text, message_id=kw.pop("message_id", f"{user}:{text}"), **kw)


class Stream:
    """A loop with its player running; `said` collects what `on_said` was told."""

    def __init__(
        self,
        *,
        llm: ScriptedLLM | None = None,
        tts: FakeTTS | None = None,
        memory: object = None,
        options: LoopOptions = FAST,
        metrics: TurnMetrics | None = None,
        player: Player | None = None,
        listener_fails: bool = False,
        coordinator: Coordinator | None = None,
        models_ready=None,
    ) -> None:
        self.queue = ChatQueue()
        self.llm = llm or ScriptedLLM()
        self.tts = tts or FakeTTS()
        self.player = player or Player(None, None, block_ms=10)
        self.said: list[tuple[str, str, str, dict]] = []
        self.listener_fails = listener_fails
        self.loop = TurnLoop(
            queue=self.queue,
            coordinator=coordinator or Coordinator(quiet_duo()),
            llm=self.llm,  # type: ignore[arg-type]
            tts=self.tts,  # type: ignore[arg-type]
            player=self.player,
            avatar=AvatarDriver(None),
            metrics=metrics or TurnMetrics(),
            memory=memory,  # type: ignore[arg-type]
            options=options,
            on_said=self._on_said,
            models_ready=models_ready,
        )
        self._tasks: list[asyncio.Task] = []

    async def _on_said(self, persona, message, spoken, record) -> None:
        self.said.append((persona.name, message.text, spoken, record))
        if self.listener_fails:
            raise ConnectionResetError("twitch: connection reset while replying")

    async def __aenter__(self) -> Stream:
        self._tasks = [asyncio.create_task(self.player.run()), asyncio.create_task(self.loop.run())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=seconds(5))
        self.player.close()

    async def answer_each(self, *texts: str, user: str) -> None:
        """Offers each chat line once the one before it has been answered."""
        for text in texts:
            self.queue.offer(chat(text, user=user))
            await self.until(lambda n=len(self.said): len(self.said) == n + 1)

    @property
    def loop_task(self) -> asyncio.Task:
        return self._tasks[1]

    async def finish(self) -> None:
        """Closes the queue and waits until the loop has answered everything."""
        self.queue.close()
        await asyncio.wait_for(asyncio.shield(self.loop_task), seconds(20))

    async def until(self, condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + seconds(timeout)
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.01)


def offered_at_once(*messages: ChatMessage, llm: ScriptedLLM, tts: FakeTTS, options: LoopOptions) -> Stream:
    """The stream after `messages` were offered together and the loop finished."""

    async def scenario() -> Stream:
        async with Stream(llm=llm, tts=tts, options=options) as s:
            for message in messages:
                s.queue.offer(message)
            await s.finish()
            return s

    return asyncio.run(scenario())


def answered(*texts: str, llm: ScriptedLLM, memory: object = None) -> Stream:
    """The stream after mika sent `texts` one by one, each once the one before was answered, and
    the loop finished (its end-of-stream work too)."""

    async def scenario() -> Stream:
        async with Stream(llm=llm, memory=memory) as s:
            await s.answer_each(*texts, user="mika")
            await s.finish()
            return s

    return asyncio.run(scenario())


def test_a_bare_stop_while_silent_does_not_cut_the_next_answer():
    async def scenario():
        async with Stream() as s:
            s.queue.offer(chat("", user="streamer", priority=Priority.INTERRUPT))  # nothing is playing
            await asyncio.sleep(0.05)
            s.queue.offer(chat("hi Spark!"))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    assert len(s.said) == 1
    _, text, spoken, record = s.said[0]
    assert text == "hi Spark!" and spoken == "Hello chat, nice to see you." and not record["interrupted"]


def test_an_interrupt_cuts_the_running_turn_and_an_ask_is_answered_in_full():
    async def scenario():
        llm = ScriptedLLM(answers=[" ".join(f"word{i}." for i in range(60)), "Sure, here is my answer."])
        async with Stream(llm=llm, tts=FakeTTS(seconds_per_word=0.05)) as s:
            s.queue.offer(chat("tell me a long story"))
            await s.until(lambda: s.player.first_audio_at)
            await asyncio.sleep(0.1)
            s.queue.offer(chat("what's next?", user="streamer", priority=Priority.INTERRUPT))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    (_, _, cut, first), (_, asked, answer, second) = s.said
    assert first["interrupted"] and 0 < len(cut.split()) < 60  # only what was heard
    assert asked == "what's next?" and answer == "Sure, here is my answer." and not second["interrupted"]
    assert s.llm.cancelled == 1
    history = s.loop.history.window()
    assert [e.spoken for e in history] == [cut, answer]


def test_memory_that_fails_everywhere_costs_only_the_memory():
    async def scenario():
        memory = RecordingMemory(fail=True)
        async with Stream(memory=memory) as s:
            s.queue.offer(chat("first", user="a", user_id="1"))
            s.queue.offer(ModerationEvent(ModerationKind.CLEAR_USER, user_id="99"))  # forget() raises
            await s.until(lambda: len(s.said) == 1)
            s.queue.offer(chat("second", user="b", user_id="2"))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    assert [(text, spoken) for _, text, spoken, _ in s.said] == [("first", ANSWERS[0]), ("second", ANSWERS[1])]
    assert all(not record["failed"] for *_, record in s.said) and s.loop.failures == 0


def test_a_recall_slower_than_its_limit_is_skipped():
    async def scenario():
        memory = RecordingMemory(recall_delay_s=seconds(30))
        options = LoopOptions(turn_timeout_s=seconds(10), memory_timeout_s=0.1)
        async with Stream(memory=memory, options=options) as s:
            s.queue.offer(chat("hello"))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    assert s.said[0][2] == "Hello chat, nice to see you." and not s.said[0][3]["failed"]
    assert s.loop.memory.remembered == [("hello", "Hello chat, nice to see you.")]


def test_a_full_disk_for_metrics_and_a_failing_listener_do_not_end_the_stream():
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full to stand for a full disk")

    async def scenario():
        metrics = TurnMetrics(jsonl=Path("/dev/full"))  # every write fails with ENOSPC
        async with Stream(metrics=metrics, listener_fails=True) as s:
            for i in range(3):
                s.queue.offer(chat(f"message {i}", user=f"v{i}"))
                await s.until(lambda i=i: len(s.said) == i + 1)
            await s.finish()
            return s, metrics

    s, metrics = asyncio.run(scenario())
    assert len(s.said) == 3 and metrics.write_failures == 3 and len(metrics.turns) == 3
    assert len(s.loop.history) == 3


def test_a_turn_that_stalls_backs_off_and_the_stream_goes_on():
    s = offered_at_once(
        chat("one", user="a"),
        chat("two", user="b"),
        llm=ScriptedLLM(answers=["This piece is stuck forever.", "This one plays.", "And this one too."]),
        tts=FakeTTS(hang_on="stuck"),
        options=LoopOptions(stall_timeout_s=0.3, max_backoff_s=0.2, cancel_wait_s=seconds(2)),
    )
    timed_out = s.said[0][3]
    assert timed_out["failed"] == "turn made no progress for 0.3 s" and not timed_out["interrupted"]
    assert s.loop.backoffs == [0.2]  # min(max_backoff_s, 1 s) after the first failure
    assert s.tts.cancelled >= 1 and s.llm.cancelled == 0  # the stuck piece's synthesis was cancelled
    # nothing of it was heard: the message is answered again (the newer one, "two", came first)
    assert timed_out["retried"] and s.loop.failures == 0
    assert [(text, spoken) for _, text, spoken, _ in s.said] == [
        ("two", ""),
        ("two", "This one plays."),
        ("one", "And this one too."),
    ]


class Server:
    """The served models going down and coming back: model calls fail as a stopped server's do,
    and `ready` says what a readiness check would."""

    def __init__(self, llm: ScriptedLLM) -> None:
        self.llm, self.checks = llm, 0

    def stop(self) -> None:
        self.llm.fail_with = ModelCallError("llm", "UNAVAILABLE: failed to connect to all addresses", retryable=True)

    def start(self) -> None:
        self.llm.fail_with = None

    async def ready(self) -> list[str]:
        self.checks += 1
        return ["llm: 127.0.0.1:8001 unreachable (UNAVAILABLE)"] if self.llm.fail_with is not None else []


def test_messages_wait_while_the_server_restarts_and_the_one_whose_turn_failed_is_answered():
    async def scenario():
        llm = ScriptedLLM(answers=["Hello there, welcome in!", "Doing great, thanks!"])
        server = Server(llm)
        options = LoopOptions(max_backoff_s=0.05, ready_poll_s=0.01, cancel_wait_s=seconds(2))
        async with Stream(llm=llm, options=options, models_ready=server.ready) as s:
            await s.loop.warm_up()
            server.stop()
            s.queue.offer(chat("hello!", user="a"))
            await s.until(lambda: len(s.said) == 1)  # its turn failed
            s.queue.offer(chat("how are you?", user="b"))
            await s.until(lambda: server.checks >= 10)  # the loop keeps asking and takes nothing meanwhile
            assert len(s.said) == 1 and s.queue.pending == 2 and llm.started == 0
            server.start()
            await s.finish()
            return s

    s = asyncio.run(scenario())
    (_, first, nothing, failed), *answers = s.said
    assert first == "hello!" and nothing == "" and failed["retried"] and failed["failed"].startswith("llm: UNAVAILABLE")
    assert sorted((text, spoken) for _, text, spoken, _ in answers) == [
        ("hello!", "Doing great, thanks!"),
        ("how are you?", "Hello there, welcome in!"),
    ]  # the newer message first, then the one put back
    assert not any(record["failed"] for *_, record in answers) and s.loop.backoffs == [0.05]
    assert [e.spoken for e in s.loop.history.window()] == [spoken for _, _, spoken, _ in answers]


def test_a_message_whose_turn_fails_again_is_not_tried_a_third_time():
    llm = ScriptedLLM()
    llm.fail_with = ModelCallError("llm", "UNAVAILABLE: failed to connect to all addresses", retryable=True)
    s = offered_at_once(chat("hello!"), llm=llm, tts=FakeTTS(), options=FAST)
    assert [(text, record["retried"]) for _, text, _, record in s.said] == [("hello!", True), ("hello!", False)]
    assert s.loop.backoffs == [0.05, 0.05]


# three long sentences (the persona's limit), ~3 s of speech at 0.03 s a word
STORY = " ".join(f"Part {i} of the story: " + " ".join(f"w{i}{j}" for j in range(30)) + "." for i in range(3))


def test_a_long_answer_is_not_cut_while_it_makes_progress():
    """A story spoken for ~10 times the stall limit: its pieces and audio keep coming, so it is
    said whole (a fixed limit on the whole turn cut such answers while they were being spoken)."""

    s = offered_at_once(
        chat("tell me a long story"),
        llm=ScriptedLLM(answers=[STORY], token_delay_s=0.005),
        tts=FakeTTS(seconds_per_word=0.03),
        options=LoopOptions(stall_timeout_s=0.3, turn_timeout_s=seconds(20), cancel_wait_s=seconds(2)),
    )
    ((_, _, spoken, timings),) = s.said
    assert not timings["failed"] and spoken == STORY
    assert timings["llm_first_token_ms"] is not None


def test_a_turn_past_the_whole_turn_limit_is_cut_even_while_it_makes_progress():
    s = offered_at_once(
        chat("tell me a long story", user="a"),
        chat("and then?", user="b"),
        llm=ScriptedLLM(answers=[STORY, "This one plays."], token_delay_s=0.005),
        tts=FakeTTS(seconds_per_word=0.03),
        options=LoopOptions(
            stall_timeout_s=seconds(10), turn_timeout_s=0.5, max_backoff_s=0.05, cancel_wait_s=seconds(2)
        ),
    )
    (_, _, cut, cut_timings), (_, _, spoken, ok) = s.said
    assert cut_timings["failed"] == "turn exceeded 0.5 s" and cut.endswith(" —")  # what was heard, marked as cut
    assert not cut_timings["retried"]  # part of it was heard: not said again
    assert STORY.startswith(cut.removesuffix(" —"))
    assert spoken == "This one plays." and not ok["failed"]


def test_a_cancelled_loop_stops_its_turn_and_writes_nothing_more():
    async def scenario():
        llm = ScriptedLLM(answers=[" ".join(f"word{i}." for i in range(200))], token_delay_s=0.02)
        memory = RecordingMemory()
        s = Stream(llm=llm, tts=FakeTTS(seconds_per_word=0.05), memory=memory)
        async with s:
            s.queue.offer(chat("tell me everything"))
            await s.until(lambda: s.player.first_audio_at)
            s.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(s.loop_task, seconds(5))
            spoken_before = list(s.tts.spoken)
            await asyncio.sleep(0.3)  # a turn left running would go on synthesising
            assert s.tts.spoken == spoken_before
            return s, memory

    s, memory = asyncio.run(scenario())
    assert s.llm.cancelled == 1 and s.llm.completed == 0
    assert s.said == [] and memory.remembered == []  # no listener call, no memory during teardown
    assert s.loop.metrics.turns[-1]["interrupted"]


def test_moderation_reaches_history_and_memory_as_soon_as_it_arrives():
    async def scenario():
        memory = RecordingMemory()
        async with Stream(memory=memory) as s:
            s.queue.offer(chat("my secret is 1234", user="troll", user_id="13", message_id="m1"))
            await s.until(lambda: len(s.said) == 1)
            s.queue.offer(chat("hello!", user="friend", user_id="7", message_id="m2"))
            await s.until(lambda: len(s.said) == 2)
            await s.until(lambda: not s.loop.busy)
            assert len(s.loop.history) == 2
            s.queue.offer(ModerationEvent(ModerationKind.CLEAR_USER, user_id="13", user="troll"))
            # no new chat arrives: the event must be applied without waiting for another turn
            await s.until(lambda: memory.forgotten and len(s.loop.history) == 1)
            assert "1234" not in str(s.loop.history.window())
            s.queue.offer(chat("what did troll say?", user="friend", user_id="7", message_id="m3"))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    last_prompt = s.llm.prompts[-1]
    assert "1234" not in str(last_prompt) and "hello!" in str(last_prompt)


def test_deleting_the_message_being_answered_cuts_the_answer_and_leaves_no_trace():
    async def scenario():
        llm = ScriptedLLM(answers=[" ".join(f"spam{i}." for i in range(60)), "Welcome!"])
        memory = RecordingMemory()
        async with Stream(llm=llm, tts=FakeTTS(seconds_per_word=0.05), memory=memory) as s:
            s.queue.offer(chat("buy followers at example dot com", user="bot", message_id="spam-1"))
            await s.until(lambda: s.player.first_audio_at)
            s.queue.offer(ModerationEvent(ModerationKind.DELETE_MESSAGE, message_id="spam-1"))
            await s.until(lambda: len(s.said) == 1)
            s.queue.offer(chat("hi, first time here", user="newbie", message_id="n-1"))
            await s.finish()
            return s, memory

    s, memory = asyncio.run(scenario())
    (_, _, cut_spoken, cut), (_, _, welcome, _) = s.said
    assert cut["interrupted"] and cut["failed"] == "moderated" and cut_spoken == ""  # nothing posted back
    assert s.llm.cancelled == 1  # generation stopped on the server
    assert welcome == "Welcome!"
    assert [e.spoken for e in s.loop.history.window()] == ["Welcome!"]
    assert memory.remembered == [("hi, first time here", "Welcome!")]
    assert "example dot com" not in str(s.llm.prompts[-1])


class _FailingStream:
    """A PortAudio stream whose device disappears after `works_for` writes."""

    def __init__(self, works_for: int) -> None:
        self.left = works_for

    def start(self) -> None: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...

    def write(self, pcm: np.ndarray) -> None:
        if self.left <= 0:
            raise OSError("PortAudio: device unavailable [PaErrorCode -9985]")
        self.left -= 1
        time.sleep(pcm.size / 8000)


def test_a_failing_audio_output_does_not_stall_later_turns(tmp_path: Path):
    async def scenario():
        device = SoundDevice(8000, stream_factory=lambda rate: _FailingStream(works_for=3))
        wav = SessionWav(tmp_path / "s.wav", 8000, disk_check_s=0.05)
        player = Player(wav, device, block_ms=10)
        async with Stream(player=player) as s:
            s.queue.offer(chat("one", user="a"))
            await s.until(lambda: s.player.first_audio_at)
            wav.min_free_bytes = 1 << 62  # the disk is now "full": the recording must stop, not the voice
            await s.until(lambda: len(s.said) == 1)
            s.queue.offer(chat("two", user="b"))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    assert [spoken for _, _, spoken, _ in s.said] == list(ANSWERS[:2])
    assert all(not r["failed"] and r["total_ms"] < seconds(10) * 1000 for *_, r in s.said)
    assert s.player.device is None and s.player.wav is None  # both outputs dropped, the stream went on


def test_the_guards_keep_echoes_markup_and_loops_off_the_stream_and_stop_generation():
    llm = ScriptedLLM(
        answers=[
            "mika: Hi mika, welcome in!</chat> <chat> mika: thanks",
            "no, no, no, no, no, no, no, no, no, no, no, no",
            "(no new chat) Add one short comment of your own on what Spark just said. Anyway, hello!",
        ]
    )
    s = answered("hi spark", "say no a lot", "what's up", llm=llm)
    spoken = [said for _, _, said, _ in s.said]
    assert spoken == ["Hi mika, welcome in!", "no, no,", "Anyway, hello!"]  # a loop ends where it shows
    assert [r["guards"] for *_, r in s.said] == [["label", "markup"], ["loop"], ["instruction"]]
    assert s.llm.cancelled == 2  # the markup and the loop stopped generation on the server
    assert [e.generated for e in s.loop.history.window()] == ["", "", ""]  # guarded text is not reused


def test_an_answer_the_guards_silence_entirely_is_asked_for_again_with_another_seed():
    welcome = "Welcome to the stream, friend!"
    llm = ScriptedLLM(answers=[welcome, welcome, "Good to see you."])
    s = answered("hi!", "hello!", llm=llm)
    assert [said for _, _, said, _ in s.said] == ["Welcome to the stream, friend!", "Good to see you."]
    assert s.said[1][3]["guards"] == ["repeat"] and s.llm.started == 3


def test_a_bare_catchphrase_is_asked_again_and_never_shown_to_the_model_as_an_answer():
    """Over a long stream the 135M model once answered everything with "Stay sparky!": each bare
    sign-off in the history (and in recalled memories) taught it the next. Now a bare one is asked
    again, said only when the retry has nothing else, and kept out of history and memory."""

    bare, real = "Stay sparky!", "Black holes are stars that folded in. Stay sparky!"
    llm = ScriptedLLM(answers=[bare, real, bare, bare, "Dogs are the best."])
    s = answered("what are black holes?", "and quasars?", "dogs or cats?", llm=llm, memory=RecordingMemory())
    spoken = [said for _, _, said, _ in s.said]
    assert spoken == ["Black holes are stars that folded in. Stay sparky!", "Stay sparky!", "Dogs are the best."]
    assert [r["guards"] for *_, r in s.said] == [["catchphrase"], ["catchphrase"], []]
    assert s.llm.started == 6  # a retry for each of the first two turns, and the end-of-stream summary
    assert [e.spoken for e in s.loop.history.window()] == [spoken[0], spoken[2]]  # like a turn nobody heard
    last_turn = [m["content"] for m in next(p for p in s.llm.prompts if "dogs or cats?" in p[-1]["content"])]
    assert any(spoken[0] in m for m in last_turn)  # the real answer is shown, the bare one is not
    assert not any(m == "Stay sparky!" or '"Stay sparky!"' in m for m in last_turn)
    assert s.loop.memory.remembered == [("what are black holes?", spoken[0]), ("dogs or cats?", spoken[2])]


def test_a_thin_answer_is_said_but_never_shown_to_the_model_or_remembered():
    """Seen in e2e runs: once a few "I'm lost... Stay sparky!" answers were in its history, the
    135M persona wrote nothing else. Such an answer is said, and kept out like a bare one."""

    thin, real = "I'm lost... Stay sparky!", "Black holes are stars that folded in. Stay sparky!"
    llm = ScriptedLLM(answers=[thin, real, "Hi!"])
    s = answered("what are black holes?", "and quasars?", "hello", llm=llm, memory=RecordingMemory())
    spoken = [said for _, _, said, _ in s.said]
    assert spoken == ["I'm lost... Stay sparky!", "Black holes are stars that folded in. Stay sparky!", "Hi!"]
    assert [e.spoken for e in s.loop.history.window()] == spoken[1:]  # "Hi!" has no sign-off: an answer
    later = [m["content"] for m in next(p for p in s.llm.prompts if "hello" in p[-1]["content"])]
    assert not any("lost" in m for m in later)
    assert s.loop.memory.remembered == [("and quasars?", spoken[1]), ("hello", "Hi!")]


def test_a_few_words_that_trail_off_without_the_catchphrase_are_kept_out_too():
    """A 500-answer e2e run: "Mighty lumen...", "Mighty moonbeam..." for 150 turns, each kept in
    the history and remembered (no sign-off, so not thin then), each the next one's example."""

    trailing, real = "Mighty lumen...", "Black holes are stars that folded in. Stay sparky!"
    llm = ScriptedLLM(answers=[trailing, real, "Hi!"])
    s = answered("what are black holes?", "and quasars?", "hello", llm=llm, memory=RecordingMemory())
    spoken = [said for _, _, said, _ in s.said]
    assert spoken == [trailing, real, "Hi!"]  # said, as before
    assert [e.spoken for e in s.loop.history.window()] == spoken[1:]
    later = [m["content"] for m in next(p for p in s.llm.prompts if "hello" in p[-1]["content"])]
    assert not any("Mighty" in m for m in later)
    assert s.loop.memory.remembered == [("and quasars?", real), ("hello", "Hi!")]


def test_the_llm_may_not_copy_runs_of_the_answers_it_gave_before():
    """A 135M persona that sees its earlier answers copies them word for word; the repeat guard
    then drops the copy and the answer is asked again. Each stream now names the runs of the
    recent answers as `bad_words`, so the server masks a copy before it is written."""

    llm = ScriptedLLM(answers=["Black holes are stars that folded in. Stay sparky!", "Dogs are the best."])
    s = answered("what are black holes?", "dogs or cats?", llm=llm)
    first, second = s.llm.banned[:2]
    blocked = set(blocked_spellings())
    assert set(first) == blocked  # nothing said yet: only the words never said on stream
    assert "Black holes are stars" in second and "are stars that folded" in second
    assert not any("sparky" in run.casefold() for run in second)  # the catchphrase stays sayable


def test_the_chat_is_read_while_memories_are_recalled_and_the_block_follows_it():
    """The memory block comes after the chat line, so the server reads the chat (a one-token
    stream) while memory is recalled and the answer's request adds only the block; the turn
    record counts what both requests read. Without memory there is nothing to wait for: no
    read-ahead."""
    events: list[tuple[str, str]] = []

    class Watched(ScriptedLLM):
        async def stream(self, prompt, options, **kw):
            events.append(("read" if options.max_tokens <= 1 else "answer", json.loads(prompt.text)[-1]["content"]))
            async for delta in super().stream(prompt, options, **kw):
                yield delta

    async def scenario(memory):
        async with Stream(llm=Watched(answers=["Nice!"]), memory=memory) as s:
            await s.answer_each("I practised all day", user="mika")
            await s.finish()
            return s

    line = "mika plays bass in a band called Low Tide"
    memory = RecordingMemory(recall_delay_s=0.2, recall_lines=(line,), on_call=lambda what: events.append((what, "")))
    s = asyncio.run(scenario(memory))
    chat_line = 'mika says: "I practised all day"'
    block = f"\n\nYou remember:\n- {line}"
    turn = [e for e in events if e[0] == "recall" or chat_line in e[1]]
    assert turn == [("read", chat_line), ("recall", ""), ("answer", chat_line + block)]
    record = s.said[0][3]
    assert record["prefill_tokens"] == len(chat_line.split()) + len(
        (chat_line + block).split()
    )  # the fake counts words
    # the server's own time to the answer's first token (the fake: 10 ms a word of what it read),
    # the answer's request alone: the chat read's is part of the prompt build
    assert record["server_first_token_ms"] == 10.0 * len((chat_line + block).split())
    # where the prompt build went: a wait for a prefix read still running (none here), the read
    assert record["prefix_wait_ms"] is not None and record["chat_read_ms"] is not None
    assert 0 <= record["prefix_wait_ms"] and 0 < record["chat_read_ms"]

    events.clear()
    s = asyncio.run(scenario(None))
    assert [e[0] for e in events if chat_line in e[1]] == ["answer"]
    assert s.said[0][3]["chat_read_ms"] is None and s.said[0][3]["prefix_wait_ms"] is None


def test_the_turns_request_goes_once_memory_is_recalled_while_the_chat_is_still_read():
    """The server runs one generation at a time, in the order the requests came: the turn's own
    request is sent as soon as memory is recalled, not after the chat read's answer came back to
    the client, so the server starts it the moment the read ends. Here the read is still going
    when the answer is asked for (a client that waited for it would wait for ever); the turn
    record still counts what both requests read, and how long the read took."""
    order: list[str] = []
    asked = asyncio.Event()
    chat_line = 'mika says: "I practised all day"'

    class SlowRead(ScriptedLLM):
        async def stream(self, prompt, options, **kw):
            last = json.loads(prompt.text)[-1]["content"]
            if options.max_tokens <= 1 and last == chat_line:
                order.append("read sent")
                await asked.wait()
                order.append("read done")
            elif options.max_tokens > 1 and last.startswith(chat_line):
                order.append("answer sent")
                asked.set()
            async for delta in super().stream(prompt, options, **kw):
                yield delta

    async def scenario():
        memory = RecordingMemory(recall_delay_s=0.02, recall_lines=("mika plays bass in a band called Low Tide",))
        async with Stream(llm=SlowRead(answers=["Nice!"]), memory=memory) as s:
            await s.answer_each("I practised all day", user="mika")
            await s.finish()
            return s

    s = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert order == ["read sent", "answer sent", "read done"]
    record = s.said[0][3]
    assert record["spoken"] == "Nice!"
    block = "\n\nYou remember:\n- mika plays bass in a band called Low Tide"
    assert record["prefill_tokens"] == len(chat_line.split()) + len((chat_line + block).split())
    assert record["chat_read_ms"] is not None and record["chat_read_ms"] > 0


def test_a_memory_the_prompt_still_shows_is_not_sent_again():
    """Each exchange keeps its user message as sent, memory block included, so a memory recalled
    turn after turn for the same viewer is in the prompt already: the server would read it again
    for nothing (~4 ms a token on 2 cores)."""

    memory = RecordingMemory(recall_lines=("mika plays bass in a band called Low Tide",))
    s = answered(
        "I practised all day", "what should I play next?", llm=ScriptedLLM(answers=["Nice!", "Cool!"]), memory=memory
    )
    bullet = "- mika plays bass in a band called Low Tide"
    first, second = s.llm.asked[:2]  # the two answers (the memory writer asks after them)
    assert bullet in first[-1]["content"]
    assert bullet not in second[-1]["content"]  # the new message alone
    assert any(bullet in m["content"] for m in second[:-1])  # still there, in the first exchange
    assert [r["memory_tokens"] for *_, r in s.said] == [9, 0]  # the fake counts words


def test_a_memory_line_the_model_echoes_is_not_said_though_its_viewer_is_not_in_the_chat():
    """The memory block names another viewer (orbit asked the same question before); the model
    writes that line on as if it were orbit's chat line. The guards know orbit from the block."""
    line = "orbit said: Why is the sky blue? / Spark answered: Sunlight scatters in the air ..."
    memory = RecordingMemory(recall_lines=(line,))
    llm = ScriptedLLM(answers=['I\'m not sure why, - orbit said: "Because of the sun!" Stay sparky!'])
    s = answered("why is the sky blue?", llm=llm, memory=memory)
    assert s.said[0][2] == "I'm not sure why,"
    assert "orbit" not in s.said[0][2] and s.said[0][3]["guards"]


def test_a_retry_samples_differently_even_for_a_greedy_persona():
    from spark_client.speech.answer import retry_sampling
    from spark_client.speech.llm import SamplingOptions

    greedy = SamplingOptions(temperature=0.0, seed=5)
    assert retry_sampling(greedy, 0) == greedy
    again = retry_sampling(greedy, 1)
    assert again.seed != greedy.seed and again.temperature >= 0.7


def test_each_turn_records_the_expressions_it_showed_and_rests_when_nothing_was_tagged():
    llm = ScriptedLLM(answers=["[surprised] Oh wow, a raid! [excited] Welcome in!", "Good to see you."])
    s = answered("raid incoming", "hello!", llm=llm)
    assert [said for _, _, said, _ in s.said] == ["Oh wow, a raid! Welcome in!", "Good to see you."]
    # tags in the order their pieces played; an untagged answer shows Spark's resting face
    assert [r["emotions"] for *_, r in s.said] == [["surprised", "excited"], ["happy"]]


def test_the_expression_of_a_silent_piece_starts_with_the_next_piece():
    async def scenario():
        llm = ScriptedLLM(answers=["[surprised] LUL LUL! [excited] Welcome in, friend!"])
        async with Stream(llm=llm, tts=FakeTTS(silent_on="LUL")) as s:
            s.queue.offer(chat("raid incoming", user="mika"))
            await s.until(lambda: len(s.said) == 1)
            await s.finish()
            return s

    s = asyncio.run(scenario())
    assert s.tts.spoken == ["Welcome in, friend!"]
    assert s.said[0][3]["emotions"] == ["surprised", "excited"]  # shown as the first sound plays


def test_facts_are_written_after_the_turn_and_the_stream_end_is_summed_up():
    async def scenario():
        memory = RecordingMemory()
        llm = ScriptedLLM(answers=["A bass player, nice!", "mika plays bass in a band called Low Tide"])
        async with Stream(llm=llm, memory=memory) as s:
            s.queue.offer(chat("I play bass in a band called Low Tide", user="mika"))
            await s.until(lambda: memory.facts)
            await s.finish()
            return s, memory

    s, memory = asyncio.run(scenario())
    assert [said for _, _, said, _ in s.said] == ["A bass player, nice!"]
    assert memory.facts == ["mika plays bass in a band called Low Tide"]
    fact_prompt = s.llm.prompts[-2]  # written after the answer, with a prompt of its own
    assert "lasting facts" in fact_prompt[0]["content"] and "Low Tide" in fact_prompt[-1]["content"]
    assert len(memory.summaries) == 1 and "mika" in memory.summaries[0]  # the end of the stream


def test_the_recap_of_earlier_streams_joins_the_system_prompt():
    class Remembering(RecordingMemory):
        async def recap(self) -> str:
            return "mika played bass and rin_7 talked about ramen."

    async def scenario():
        async with Stream(memory=Remembering()) as s:
            await s.loop.warm_up()
            s.queue.offer(chat("hi!"))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    persona_prompts = [p for p in s.llm.prompts if p[0]["content"].startswith("You are ")]  # not memory's own
    assert len(persona_prompts) >= 3  # warm-up prefill of each persona, and the answer
    assert all(
        p[0]["content"].endswith("Last time on stream: mika played bass and rin_7 talked about ramen.")
        for p in persona_prompts
    )
