"""`LiveSession` wired to fakes of the served models (tests/fakes/speech.py): the real queue,
loop, player and shutdown. A broken memory, a full disk and a failed chat source degrade the
stream; a cancelled session shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from spark_client.events import ChatEvent, ChatMessage, ModerationEvent, ModerationKind
from spark_client.session import LiveSession, LiveSettings
from spark_client.sources.base import ChatSink
from spark_client.turns.loop import LoopOptions

from tests.fakes.personas import quiet_duo
from tests.fakes.speech import ANSWERS, FakeModels, FakeTTS, RecordingMemory, ScriptedLLM
from tests.timing import seconds


class ListSource:
    """Offers its events one by one, each once the stream is idle, then ends (or fails)."""

    def __init__(self, name: str, events: list[ChatEvent], *, session: LiveSession, fail: str = "") -> None:
        self.name, self.events, self.session, self.fail = name, events, session, fail

    async def run(self, sink: ChatSink) -> None:
        for event in self.events:
            await self.session.loop.idle()  # type: ignore[union-attr]
            sink.offer(event)
            await asyncio.sleep(0.05)
        await self.session.loop.idle()  # type: ignore[union-attr]
        if self.fail:
            raise ConnectionError(self.fail)


def message(text: str, user: str = "viewer", **kw) -> ChatMessage:
    return ChatMessage(source="list", user=user, text=text, message_id=kw.pop("message_id", text), **kw)


def settings(tmp_path: Path, **kw) -> LiveSettings:
    base = dict(
        triton_url="127.0.0.1:1",
        wav_path=tmp_path / "out" / "session.wav",
        playback=False,
        vts_url=None,
        triton_metrics_url=None,
        loop=LoopOptions(turn_timeout_s=seconds(10), max_backoff_s=0.05),
        personas=quiet_duo(),  # each test counts the chat's own answers
    )
    base.update(kw)
    return LiveSettings(**base)  # type: ignore[arg-type]


def test_a_broken_memory_and_a_full_disk_degrade_the_stream_but_every_message_is_answered(tmp_path: Path):
    printed: list[str] = []
    memory = RecordingMemory(fail=True)
    session = LiveSession(
        settings(tmp_path, metrics_jsonl=Path("/dev/full")),
        printer=printed.append,
        models=FakeModels(),
        llm=ScriptedLLM(),
        tts=FakeTTS(),
        memory=memory,  # type: ignore[arg-type]
    )
    events: list[ChatEvent] = [
        message("hello", user_id="1"),
        ModerationEvent(ModerationKind.CLEAR_USER, user_id="66"),  # memory.forget raises
        message("how are you?", user="other", user_id="2"),
    ]
    code = asyncio.run(session.run([ListSource("list", events, session=session)]))
    assert code == 0
    answers = [line for line in printed if line.startswith("Spark: ")]
    assert answers == [f"Spark: {a}" for a in ANSWERS[:2]]
    assert any("session audio:" in line for line in printed) and (tmp_path / "out" / "session.wav").is_file()
    assert session.models.closed


def test_a_failed_chat_source_gives_exit_1_after_the_others_are_answered(tmp_path: Path):
    printed: list[str] = []
    session = LiveSession(
        settings(tmp_path, use_memory=False),
        printer=printed.append,
        models=FakeModels(),
        llm=ScriptedLLM(),
        tts=FakeTTS(),
    )
    good = ListSource("console", [message("hi"), message("still here?")], session=session)
    bad = ListSource("twitch", [], session=session, fail="irc.chat.twitch.tv: connection refused")
    code = asyncio.run(session.run([good, bad]))
    assert code == 1
    assert len([line for line in printed if line.startswith("Spark: ")]) == 2
    assert any("source-twitch stopped" in line and "connection refused" in line for line in printed)


def test_missing_models_are_named_and_nothing_starts(tmp_path: Path):
    printed: list[str] = []
    session = LiveSession(
        settings(tmp_path, use_memory=False), printer=printed.append, models=FakeModels(ready_models=("llm",))
    )
    assert asyncio.run(session.run([])) == 2
    assert any("tts: not ready" in line for line in printed) and not (tmp_path / "out").exists()


def test_a_cancelled_session_stops_its_turn_and_shuts_down(tmp_path: Path):
    printed: list[str] = []
    llm = ScriptedLLM(answers=[" ".join(f"word{i}." for i in range(300))], token_delay_s=0.01)
    session = LiveSession(
        settings(tmp_path, use_memory=False),
        printer=printed.append,
        models=FakeModels(),
        llm=llm,
        tts=FakeTTS(seconds_per_word=0.05),
    )

    async def scenario():
        run = asyncio.create_task(session.run([ListSource("list", [message("tell me everything")], session=session)]))
        for _ in range(int(seconds(10) / 0.01)):  # until the answer is being spoken
            if llm.started:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        run.cancel()  # what Ctrl-C does
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(run, seconds(10))

    asyncio.run(scenario())
    assert llm.cancelled == 1 and session.models.closed
    assert any("stage (ms from chat message)" in line or "no turns" in line for line in printed)


def test_a_memory_store_in_use_by_another_client_stops_the_stream_at_start_and_says_who(tmp_path: Path):
    from spark_client.memory.lock import StoreLock

    printed: list[str] = []
    store = tmp_path / "memory"
    store.mkdir()
    with StoreLock(store):  # another spark-client live holds it
        session = LiveSession(
            settings(tmp_path, memory_dir=store),
            printer=printed.append,
            models=FakeModels(),
            llm=ScriptedLLM(),
            tts=FakeTTS(),
        )
        code = asyncio.run(session.run([ListSource("list", [message("hi")], session=session)]))
    assert code == 1
    error = next(line for line in printed if line.startswith("error: "))
    assert str(store) in error and "in use" in error and "pid" in error
    assert not any(line.startswith("Spark: ") for line in printed)  # nothing was answered


def _recorded_settings(monkeypatch) -> list[LiveSettings]:
    """What `spark-client live` would run with, one per invocation: the settings are what is
    checked, no stream runs."""
    from spark_client import session

    seen: list[LiveSettings] = []

    class Recorded(LiveSession):
        async def run(self, sources) -> int:
            seen.append(self.settings)
            return 0

    monkeypatch.setattr(session, "LiveSession", Recorded)
    return seen


def test_the_prompt_budget_given_on_the_command_line_reaches_the_turn_loop(tmp_path: Path, monkeypatch):
    from spark_client import cli
    from spark_client.turns import PROMPT_BUDGET_TOKENS
    from typer.testing import CliRunner

    seen = _recorded_settings(monkeypatch)
    runner = CliRunner()
    for args in ([], ["--prompt-budget", "4096"]):
        result = runner.invoke(
            cli.app, ["live", "--no-console", "--no-memory", "--wav", str(tmp_path / "s.wav"), *args]
        )
        assert result.exit_code == 0, result.output
    assert [s.loop.prompt_budget_tokens for s in seen] == [PROMPT_BUDGET_TOKENS, 4096]
    refused = runner.invoke(cli.app, ["live", "--no-console", "--prompt-budget", "100"])
    assert refused.exit_code == 2 and "--prompt-budget" in refused.output


def test_a_memory_server_url_replaces_the_memory_folder_and_both_at_once_are_refused(tmp_path: Path, monkeypatch):
    """`live --memory-url` once failed at every start (the default folder was passed beside the url,
    and the store took the pair for a mistake): the stream ran with no memory at all."""
    from spark_client import cli
    from typer.testing import CliRunner

    seen = _recorded_settings(monkeypatch)
    runner = CliRunner()
    base = ["live", "--no-console", "--wav", str(tmp_path / "s.wav")]
    assert runner.invoke(cli.app, [*base, "--memory-url", "http://127.0.0.1:8400"]).exit_code == 0
    assert runner.invoke(cli.app, [*base, "--memory-dir", str(tmp_path / "memory")]).exit_code == 0
    server, folder = ("http://127.0.0.1:8400", None), (None, tmp_path / "memory")
    assert [(s.memory_url, s.memory_dir) for s in seen] == [server, folder]
    both = runner.invoke(cli.app, [*base, "--memory-url", "http://127.0.0.1:8400", "--memory-dir", str(tmp_path)])
    assert both.exit_code == 2 and "--memory-dir or --memory-url, not both" in both.output and len(seen) == 2
