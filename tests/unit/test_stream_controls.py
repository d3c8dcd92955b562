"""What the panel's controls do to the stream, against the real queue, coordinator and loop (fake
models): a line said word for word, answering paused and resumed, a message skipped, the
co-host muted, and the turn listener told who speaks."""

from __future__ import annotations

import asyncio

from spark_client.events import LINE_SOURCE, ChatMessage, TurnStarted
from spark_client.screen.controls import ControlError, StreamControls, message_key
from spark_client.screen.hub import ScreenHub
from spark_client.turns.coordinator import Coordinator
from spark_client.turns.queue import ChatQueue

from tests.fakes.personas import quiet_duo
from tests.fakes.speech import ANSWERS, FakeTTS, ScriptedLLM
from tests.timing import seconds
from tests.unit.test_turn_loop import Stream, chat


def controls_for(queue: ChatQueue, coordinator: Coordinator) -> StreamControls:
    return StreamControls(hub=ScreenHub(), queue=queue, coordinator=coordinator)


def test_a_line_is_said_word_for_word_without_the_llm_and_stays_out_of_history_and_chat_context():
    async def scenario():
        started: list[TurnStarted] = []
        async with Stream() as s:
            s.loop.on_turn = started.append
            controls = controls_for(s.queue, s.loop.coordinator)
            controls.say("  [happy] Thanks for the raid, everyone!  ", persona="Ember")
            await s.finish()
            return s, started

    s, started = asyncio.run(scenario())
    assert s.llm.started == 0  # no LLM stream for a line
    (persona, text, spoken, record), *_ = s.said
    assert persona == "Ember" and spoken == "Thanks for the raid, everyone!" and record["kind"] == "line"
    assert " ".join(s.tts.spoken) == "Thanks for the raid, everyone!"  # in pieces, as an answer would be
    assert "happy" in record["emotions"]  # the tag became an expression, not words
    assert s.loop.history.window() == []
    assert started == [TurnStarted(1, "Ember", "line", None)]


def test_paused_answering_takes_nothing_until_resumed_and_fills_no_silence():
    async def scenario():
        async with Stream() as s:
            controls = controls_for(s.queue, s.loop.coordinator)
            controls.pause(True)
            s.queue.offer(chat("anyone there?"))
            controls.say("Be right back!")  # the streamer's own line still goes through
            await s.until(lambda: s.said)
            await asyncio.sleep(seconds(0.3))
            held = (len(s.said), s.queue.pending, controls.hub.snapshot()[-1])
            controls.pause(False)
            await s.finish()
            return s, held

    s, (said_while_paused, pending_while_paused, queue_update) = asyncio.run(scenario())
    assert said_while_paused == 1 and pending_while_paused == 1
    assert queue_update["type"] == "queue" and queue_update["paused"] is True
    assert [(t[1], t[3]["kind"]) for t in s.said] == [("Be right back!", "line"), ("anyone there?", "answer")]


def test_a_skipped_message_is_never_answered_and_is_counted():
    queue = ChatQueue()
    controls = controls_for(queue, Coordinator(quiet_duo()))
    first, second = chat("first"), chat("second")
    queue.offer(first)
    queue.offer(second)
    assert controls.skip(message_key(first)) and not controls.skip(message_key(first))
    assert queue.waiting() == [second] and queue.counts["skipped"] == 1
    update = controls.hub.snapshot()[-1]
    assert [m["text"] for m in update["waiting"]] == ["second"] and update["counts"]["skipped"] == 1


def test_a_muted_cohost_neither_answers_when_named_nor_follows_and_the_main_persona_cannot_be_muted():
    coordinator = Coordinator(quiet_duo())
    main, cohost = coordinator.personas
    controls = controls_for(ChatQueue(), coordinator)
    named = ChatMessage("test", "viewer", f"{cohost.name}, what do you think?")
    assert coordinator.choose(named) is cohost
    controls.mute(cohost.name, True)
    assert coordinator.choose(named) is main
    assert (
        coordinator.follow_up(main, f"What do you say, {cohost.name}?", urgent_waiting=False, chat_waiting=False)
        is None
    )
    status = controls.hub.snapshot()[0]
    assert {p["name"]: p["muted"] for p in status["personas"]} == {main.name: False, cohost.name: True}
    controls.mute(cohost.name, False)
    assert coordinator.choose(named) is cohost
    try:
        controls.mute(main.name, True)
    except ControlError as exc:
        assert "cannot be muted" in str(exc)
    else:
        raise AssertionError("the main persona was muted")


def test_an_interrupt_from_the_panel_cuts_the_turn_playing():
    async def scenario():
        llm = ScriptedLLM(answers=[" ".join(f"word{i}." for i in range(60))])
        async with Stream(llm=llm, tts=FakeTTS(seconds_per_word=0.05)) as s:
            controls = controls_for(s.queue, s.loop.coordinator)
            s.queue.offer(chat("tell me a long story"))
            await s.until(lambda: s.player.first_audio_at)
            controls.interrupt()
            await s.finish()
            return s

    s = asyncio.run(scenario())
    (_, _, spoken, record), *_ = s.said
    assert record["interrupted"] and spoken != ANSWERS[0]
    assert s.queue.counts["interrupts"] == 1


def test_bad_lines_are_refused_with_a_reason():
    controls = controls_for(ChatQueue(), Coordinator(quiet_duo()))
    for text, persona, why in [
        ("   ", None, "nothing to say"),
        ("x" * 501, None, "at most"),
        ("hi", "Nobody", "no persona"),
    ]:
        try:
            controls.say(text, persona)
        except ControlError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{text!r} was accepted")
    assert not any(m.source == LINE_SOURCE for m in controls.queue.waiting())


def test_the_watch_reports_models_twitch_vtube_studio_the_mic_and_host_memory():
    from types import SimpleNamespace

    from spark_client.health import MemoryReading

    from tests.fakes.speech import FakeModels

    twitch = SimpleNamespace(joined=False, config=SimpleNamespace(channel="pixel"))
    reading = MemoryReading(used_fraction=0.4213, available_gb=9.87, triton_gpu_used_gb=None)
    controls = StreamControls(
        hub=ScreenHub(),
        queue=ChatQueue(),
        coordinator=Coordinator(quiet_duo()),
        models=FakeModels(ready_models=("llm", "tts")),
        model_names=("llm", "llm_template", "tts"),
        sources=lambda: [twitch],
        voice=lambda: object(),
        memory_watch=lambda: SimpleNamespace(last=reading),
    )
    asyncio.run(controls._check_models())
    controls.publish_status_now()
    status = controls.hub.snapshot()[0]
    ok = {name: state["ok"] for name, state in status["connections"].items()}
    assert ok == {
        "Triton llm": True,
        "Triton llm_template": False,
        "Triton tts": True,
        "VTube Studio": None,  # off
        "Twitch #pixel": False,
        "mic": True,
    }
    assert status["host_memory"] == {"used": 0.421, "available_gb": 9.9} and status["memory"] is False
