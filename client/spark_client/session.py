"""`spark-client live`: wires sources -> turn loop -> speech -> avatar, runs until the chat ends
or Ctrl-C, then shuts down cleanly (streams cancelled, sockets closed, WAV and metrics flushed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spark_client.avatar.driver import AvatarDriver
from spark_client.events import GAME_SOURCE, ChatMessage
from spark_client.health import HeapRelease, MemoryWatch
from spark_client.memory import Embedder, Memory
from spark_client.memory.errors import MemoryStoreError
from spark_client.metrics import TurnMetrics, timings_line
from spark_client.personas import Persona, StateFile, shipped_personas
from spark_client.sources.base import ChatSource
from spark_client.speech.audio import SessionWav, SoundDevice
from spark_client.speech.llm import LLMClient
from spark_client.speech.playback import Player
from spark_client.speech.triton import CallTimeouts, ModelCallError, TritonModels
from spark_client.speech.tts import TTSClient
from spark_client.turns.coordinator import Coordinator
from spark_client.turns.loop import LoopOptions, TurnLoop
from spark_client.turns.queue import ChatQueue

log = logging.getLogger(__name__)

REQUIRED_MODELS = ("llm", "llm_template", "tts")


@dataclass(frozen=True)
class MicSettings:
    """The voice input (`--mic`, `--mic-file`): one of a device or fed files."""

    device: str | int | None = None  # None: the default input device
    files: tuple[tuple[Path, float], ...] = ()  # (WAV, seconds after the start) fed instead of a device
    tail_s: float = 8.0  # after the last fed file, how long the fed "mic" stays open
    loopback: bool = False  # mix the session's own playback back into the fed signal (echo test)
    loopback_gain: float = 0.5
    loopback_delay_ms: float = 80.0
    speaker: str = "streamer"
    echo_cancel: bool = True  # off with a headset: nothing to cancel
    end_silence_ms: float = 500.0
    barge_in: bool = True


@dataclass(frozen=True)
class GameSettings:
    """Game mode (`--minecraft`, `--watch-minecraft`): where the bot plays and what it aims for."""

    connection: Any  # game.sidecar.GameConnection
    goal: str = "gather wood, then craft a crafting table"
    constrained: bool = True  # grammar-guided skill calls (off only to measure what they buy)


@dataclass
class LiveSettings:
    triton_url: str
    model_urls: dict[str, str] = field(default_factory=dict)  # model -> host:port overrides
    wav_path: Path = Path("out/session.wav")
    playback: bool = True  # use the sound device when there is one
    vts_url: str | None = "ws://localhost:8001"
    vts_token_path: Path | None = None
    memory_dir: Path | None = None  # None: memory only for this session
    memory_url: str | None = None  # a Chroma server (http://host:port) instead of the folder
    use_memory: bool = True
    metrics_jsonl: Path | None = None
    prometheus_port: int = 0
    personas: tuple[Persona, ...] = field(default_factory=shipped_personas)
    duo_state_path: Path | None = None  # the duo's rhythm across restarts (None: this session only)
    moderation_delay_s: float = 1.5  # Twitch chat waits this long so a moderator can remove it first
    triton_metrics_url: str | None = None  # e.g. http://127.0.0.1:8002/metrics, for the memory watch
    timeouts: CallTimeouts = CallTimeouts()
    loop: LoopOptions = LoopOptions()
    mic: MicSettings | None = None
    game: GameSettings | None = None
    screen: Any = None  # screen.server.ScreenSettings: the overlay and panel (None: not served)


Printer = Callable[[str], None]


class LiveSession:
    """One stream. The Triton clients are made from `settings` unless given (tests give fakes
    that speak the same interfaces); whatever the session makes, it closes."""

    def __init__(
        self,
        settings: LiveSettings,
        *,
        printer: Printer = print,
        models: Any = None,
        llm: Any = None,
        tts: Any = None,
        memory: Memory | None = None,
    ) -> None:
        self.settings = settings
        self.print = printer
        self.models = models or TritonModels(settings.triton_url, settings.model_urls, timeouts=settings.timeouts)
        self._llm, self._tts, self._memory = llm, tts, memory
        self._opened_memory: Memory | None = None  # made (and locked) by this session: closed by it
        self.queue = ChatQueue(moderation_delay_s=settings.moderation_delay_s)
        self.metrics = TurnMetrics(jsonl=settings.metrics_jsonl, prometheus_port=settings.prometheus_port)
        self.vts: Any = None
        self.repliers: list[Any] = []
        self.loop: TurnLoop | None = None
        self.source_errors: list[str] = []
        self.voice: Any = None  # turns/voice.VoiceTurns when the microphone is on
        self.mic_feed: Any = None  # sources/mic/feed.FileFeed when files are fed to the microphone
        self.game: Any = None  # game.sidecar.GameBot in game mode
        self.game_player: Any = None  # game.player.GamePlayer when the personas play (not watch)
        self.game_narrator: Any = None  # sources.game.GameNarrator
        self.game_board: Any = None  # game.goals.GoalBoard
        self.screen: Any = None  # screen.server.ScreenServer while the overlay and panel are served
        self.screen_hub: Any = None  # screen.hub.ScreenHub
        self.memory_watch: MemoryWatch | None = None
        self.heap_release: HeapRelease | None = None
        self.sources: list[ChatSource] = []

    async def check_models(self) -> list[str]:
        problems = []
        for model in REQUIRED_MODELS:
            ok, detail = await self.models.ready(model)
            if not ok:
                problems.append(detail)
        return problems

    async def _said(self, persona: Persona, message: ChatMessage, spoken: str, record: dict[str, Any]) -> None:
        if record["failed"] == "moderated":
            status = " (cut: a moderator removed the message)"
        elif record["interrupted"]:
            status = " (interrupted)"
        else:
            again = "; answering it again" if record.get("retried") else ""
            status = f" (failed: {record['failed']}{again})" if record["failed"] else ""
        self.print(f"{persona.name}: {spoken or '…'}{status}")
        self.print(timings_line(record))
        if self.screen_hub is not None:
            self.screen_hub.turn_ended(persona.name, spoken, record)
        for replier in self.repliers:
            if message.source == replier.name and replier.can_reply and spoken:
                await replier.reply(spoken, parent_message_id=message.message_id)

    async def run(self, sources: list[ChatSource]) -> int:
        """The stream, until the sources end (0; 1 when one failed) or the task is cancelled
        (Ctrl-C): whatever was started by then is stopped, in every case."""
        tasks: list[asyncio.Task[Any]] = []
        self.sources = sources
        player: Player | None = None
        avatar: AvatarDriver | None = None
        try:
            problems = await self.check_models()
            if problems:
                for problem in problems:
                    self.print(f"error: {problem}")
                self.print("is tritonserver running? `make serve` starts it (or `make live` does everything)")
                return 2
            if self.settings.vts_url:
                from spark_client.avatar.vts import VTubeStudioClient

                self.vts = VTubeStudioClient(
                    self.settings.vts_url, token_path=self.settings.vts_token_path, face_found=True
                )
                await self.vts.start()
            device = None
            if self.settings.playback:
                available, detail = SoundDevice.describe()
                self.print(detail)
                if available:
                    try:
                        device = SoundDevice(22050)
                    except Exception as exc:
                        self.print(f"sound device unusable ({exc}); writing the WAV only")
            try:
                wav: SessionWav | None = SessionWav(self.settings.wav_path)
            except OSError as exc:
                self.print(f"warning: no session recording ({exc}); the stream goes on without it")
                wav = None
            reopen = (lambda: SoundDevice(22050)) if device is not None else None
            avatar = AvatarDriver(self.vts)
            player = Player(wav, device, on_block=avatar.on_block, on_phonemes=avatar.on_phonemes, reopen=reopen)
            memory = self._memory
            if memory is None and self.settings.use_memory:
                try:
                    memory = self._opened_memory = await asyncio.to_thread(
                        Memory.open, Embedder(self.models), path=self.settings.memory_dir, url=self.settings.memory_url
                    )
                except MemoryStoreError as exc:  # in use by another client, or unreadable: the streamer must know
                    self.print(f"error: {exc}")
                    return 1
                except Exception as exc:  # anything else (chromadb itself failing): the stream goes on without memory
                    self.print(f"warning: memory unavailable ({exc}); answering without it")
            self.loop = TurnLoop(
                queue=self.queue,
                coordinator=Coordinator(
                    self.settings.personas,
                    state_file=StateFile(self.settings.duo_state_path) if self.settings.duo_state_path else None,
                ),
                llm=self._llm or LLMClient(self.models),
                tts=self._tts or TTSClient(self.models),
                player=player,
                avatar=avatar,
                metrics=self.metrics,
                memory=memory,
                options=self.settings.loop,
                on_said=self._said,
                models_ready=self.check_models,
            )
            if self.settings.screen is not None:
                await self._start_screen(player, memory, tasks)
            started = asyncio.get_running_loop().time()
            try:
                await self.loop.warm_up()
                self.print(f"warmed up in {asyncio.get_running_loop().time() - started:.1f} s")
            except ModelCallError as exc:
                self.print(f"warning: warm-up failed ({exc}); the first answers may be slow")
            tasks.append(asyncio.create_task(player.run(), name="player"))
            if self._opened_memory is not None:  # bounded growth: a prune pass now and every hour
                tasks.append(asyncio.create_task(self._opened_memory.maintain(), name="memory-prune"))
            self.memory_watch = watch = MemoryWatch(
                metrics_url=self.settings.triton_metrics_url, warn=lambda m: self.print(f"warning: {m}")
            )
            tasks.append(asyncio.create_task(watch.run(), name="memory-watch"))
            self.heap_release = HeapRelease(idle=self.loop.idle)
            tasks.append(asyncio.create_task(self.heap_release.run(), name="heap-release"))
            if self.settings.mic is not None and (listener := await self._microphone(player)) is not None:
                if self.settings.mic.files or not sources:  # fed files end; a mic alone is the stream
                    sources = [*sources, listener]
                else:  # a microphone beside chat listens until the chat ends
                    tasks.append(asyncio.create_task(listener.run(self.queue), name="source-mic"))
            sink: Any = self.queue
            if self.settings.game is not None:
                sink = self._start_game(tasks)
            source_tasks = [asyncio.create_task(s.run(sink), name=f"source-{s.name}") for s in sources]
            tasks += source_tasks
            loop_task = asyncio.create_task(self.loop.run(), name="turn-loop")
            tasks.append(loop_task)
            sources_done = asyncio.create_task(self._close_when_done(source_tasks), name="sources-watch")
            tasks.append(sources_done)
            await loop_task
            return 1 if self.source_errors else 0
        finally:
            await self._shutdown(tasks, player, avatar)

    async def _start_screen(self, player: Player, memory: Memory | None, tasks: list[asyncio.Task[Any]]) -> None:
        """The overlay and the panel (screen/): captions from the player, turns from the loop, the
        panel's controls on the queue, coordinator and memory. A port that cannot be bound costs
        the screen with a warning, never the stream."""
        from spark_client.screen.auth import ScreenConfigError
        from spark_client.screen.controls import StreamControls
        from spark_client.screen.hub import ScreenHub
        from spark_client.screen.server import ScreenServer

        assert self.loop is not None
        settings = self.settings.screen
        hub = ScreenHub(max_buffer=settings.max_buffer)
        controls = StreamControls(
            hub=hub,
            queue=self.queue,
            coordinator=self.loop.coordinator,
            models=self.models,
            model_names=(*REQUIRED_MODELS, *(("embed",) if memory is not None else ())),
            memory=memory,
            vts=self.vts,
            sources=lambda: self.sources,
            voice=lambda: self.voice,
            memory_watch=lambda: self.memory_watch,
        )
        try:
            server = ScreenServer(settings, hub=hub, controls=controls)
            url = await server.start()
        except ScreenConfigError as exc:
            self.print(f"warning: the overlay and panel are off: {exc}")
            return
        except OSError as exc:
            self.print(
                f"warning: the overlay and panel are off: cannot listen on {settings.host}:{settings.port} "
                f"({exc.strerror or exc}); the stream goes on (--screen-port to choose another)"
            )
            return
        self.screen, self.screen_hub = server, hub
        player.captions.append(hub.word)
        self.loop.on_turn = hub.turn_started
        listeners = getattr(memory, "listeners", None)
        if isinstance(listeners, list):  # the panel's memory watch: recalled, remembered, forgotten
            loop = self.loop
            listeners.append(hub.memory_listener(lambda: loop.current_turn))
        tasks.append(asyncio.create_task(controls.watch(), name="screen-watch"))
        self.print(f"streamer's screen: {url}/panel (OBS overlay: {url}/overlay)")

    async def _microphone(self, player: Player) -> Any:
        """The voice input as a chat source (sources/mic/), or None with a warning when it cannot
        run: the stream goes on with chat only."""
        from spark_client.sources.mic.capture import MicCapture
        from spark_client.sources.mic.echo import EchoSuppressor, PlaybackReference
        from spark_client.sources.mic.feed import FileFeed
        from spark_client.sources.mic.listener import MicListener, MicOptions
        from spark_client.sources.mic.segmenter import VadOptions
        from spark_client.sources.mic.transcribe import STTClient
        from spark_client.sources.mic.vad import SileroVad
        from spark_client.turns.voice import VoiceOptions, VoiceTurns

        mic = self.settings.mic
        assert mic is not None and self.loop is not None
        ok, detail = await self.models.ready("stt")
        if not ok:
            self.print(f"warning: no voice input: speech to text is not available ({detail}); chat only")
            return None
        try:
            vad = SileroVad()
        except Exception as exc:
            self.print(f"warning: no voice input: {exc}; chat only")
            return None
        stt = STTClient(self.models)
        try:  # the first call loads Whisper's weights into the cache: not while the streamer waits
            await asyncio.wait_for(stt.transcribe(np.zeros(8000, dtype=np.float32)), timeout=60)
        except (ModelCallError, TimeoutError) as exc:
            self.print(
                f"warning: speech to text did not warm up ({exc or 'timed out'}); the first utterance may be slow"
            )
        reference = PlaybackReference()
        player.taps.append(reference.add)
        frames: Any
        if mic.files:
            frames = self.mic_feed = FileFeed(
                list(mic.files),
                loopback=reference.read if mic.loopback else None,
                loopback_gain=mic.loopback_gain,
                loopback_delay_ms=mic.loopback_delay_ms,
                tail_s=mic.tail_s,
            )
        else:
            frames = MicCapture(mic.device, on_status=self.print)
        voice = VoiceTurns(
            queue=self.queue,
            player=player,
            loop=self.loop,
            options=VoiceOptions(speaker=mic.speaker, barge_in=mic.barge_in),
            record=self.metrics.event,
            printer=self.print,
        )
        self.voice = voice
        self.print(
            f"listening ({'fed files' if mic.files else 'microphone'}) as {mic.speaker}; "
            f"echo cancellation {'on' if mic.echo_cancel else 'off (headset)'}"
        )
        return MicListener(
            frames,
            stt,
            voice,
            echo=EchoSuppressor(reference, enabled=mic.echo_cancel),
            vad=vad,
            options=MicOptions(vad=VadOptions(end_silence_ms=mic.end_silence_ms)),
        )

    def _start_game(self, tasks: list[asyncio.Task[Any]]) -> Any:
        """Game mode beside the stream: the supervised bot, the narration of what happens and,
        when playing, the player; returns the sink chat goes to (game commands are taken out).
        Without Node or the sidecar's packages the stream goes on without the game."""
        from spark_client.game.goals import GameCommands, GoalBoard
        from spark_client.game.player import GamePlayer, PlayOptions
        from spark_client.game.sidecar import GameBot, SidecarOptions
        from spark_client.sources.game import GameNarrator

        game = self.settings.game
        assert game is not None and self.loop is not None
        problem = SidecarOptions().problem()
        if problem:
            self.print(f"warning: no game: {problem}")
            return self.queue
        connection = game.connection
        self.game_narrator = narrator = GameNarrator(
            self.queue,
            bot_name=connection.username,
            printer=self.print,
            record=self.metrics.event,
            waiting=lambda: self.queue.waiting_from(GAME_SOURCE),
        )
        self.game = GameBot(connection, on_event=narrator.on_event)
        tasks.append(asyncio.create_task(self.game.run(), name="game-bot"))
        where = f"{connection.host}:{connection.port}"
        if connection.mode == "watch":
            self.print(f"watching {connection.watch_player} on {where} as {connection.username}")
            return self.queue
        self.game_board = GoalBoard(game.goal)
        self.game_player = GamePlayer(
            bot=self.game,
            llm=self._llm or LLMClient(self.models),
            board=self.game_board,
            persona=self.settings.personas[0].name,
            options=PlayOptions(constrained=game.constrained),
            on_action=narrator.on_action,
            record=self.metrics.event,
        )
        tasks.append(asyncio.create_task(self.game_player.run(), name="game-player"))
        self.print(f"playing on {where} as {connection.username}; goal: {game.goal} (chat: !goal, !vote, !goals)")
        return GameCommands(self.queue, self.game_board, printer=self.print)

    async def _close_when_done(self, source_tasks: list[asyncio.Task[Any]]) -> None:
        results = await asyncio.gather(*source_tasks, return_exceptions=True)
        for task, result in zip(source_tasks, results, strict=False):
            if isinstance(result, Exception):
                self.source_errors.append(f"{task.get_name()}: {result}")
                self.print(f"error: chat source {task.get_name()} stopped: {result}")
        self.queue.close()

    async def _shutdown(
        self, tasks: list[asyncio.Task[Any]], player: Player | None, avatar: AvatarDriver | None
    ) -> None:
        """Stops everything the session started; each step runs even when one before it failed."""
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        steps: list[tuple[str, Callable[[], Any]]] = [("avatar", avatar.aclose)] if avatar is not None else []
        if self.screen is not None:  # first: the pages hear that the stream ended
            steps.insert(0, ("screen", self.screen.aclose))
        if self.vts is not None:
            steps.append(("VTube Studio", self.vts.aclose))
        if player is not None:
            steps.append(("player", player.close))
        if self._opened_memory is not None:
            steps.append(("memory", self._opened_memory.close))
        if self.mic_feed is not None:
            for fed in self.mic_feed.schedule:  # when each file reached the mic, for perf and tests
                self.metrics.event(
                    {
                        "event": "mic_file",
                        "path": str(fed.path),
                        "start_at": round(fed.start_at, 4),
                        "duration_s": round(fed.duration_s, 3),
                    }
                )
        steps += [("Triton", self.models.close), ("metrics", self.metrics.close)]
        for name, step in steps:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await asyncio.wait_for(result, timeout=5.0)
            except Exception as exc:
                log.warning("shutdown: %s did not close cleanly: %s", name, exc)
        if player is None:  # stopped before the stream began: nothing was played
            return
        with contextlib.suppress(Exception):
            parts = player.recorded_paths()
            if parts:
                more = f" (+{len(parts) - 1} more part(s): {parts[-1].name})" if len(parts) > 1 else ""
                self.print(f"session audio: {parts[0]}{more}")
            self.print(self.metrics.summary_text())
            if self.voice is not None and self.voice.counts:
                self.print(f"voice: {_counted(self.voice.counts)}")
            if self.game_player is not None and self.game_player.steps:
                self.print(f"game: {_counted(Counter(step.outcome for step in self.game_player.steps))}")


def _counted(counts: Mapping[str, int]) -> str:
    """`{"no_words": 2, "turn": 5}` -> "2 no words, 5 turn", for the session's summary."""
    return ", ".join(f"{n} {outcome.replace('_', ' ')}" for outcome, n in sorted(counts.items()))
