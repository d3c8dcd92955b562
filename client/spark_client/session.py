"""`spark-client live`: wires sources -> turn loop -> speech -> avatar, runs until the chat ends
or Ctrl-C, then shuts down cleanly (streams cancelled, sockets closed, WAV and metrics flushed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_client.avatar.driver import AvatarDriver
from spark_client.events import ChatMessage
from spark_client.health import MemoryWatch
from spark_client.metrics import TurnMetrics, timings_line
from spark_client.sources.base import ChatSource
from spark_client.speech.audio import SessionWav, SoundDevice
from spark_client.speech.llm import LLMClient
from spark_client.speech.playback import Player
from spark_client.speech.triton import CallTimeouts, ModelCallError, TritonModels
from spark_client.speech.tts import TTSClient
from spark_client.turns.loop import LoopOptions, TurnLoop
from spark_client.turns.memory import Embedder, Memory
from spark_client.turns.persona import DEFAULT_PERSONAS, Persona, PersonaDirector
from spark_client.turns.queue import ChatQueue

log = logging.getLogger(__name__)

REQUIRED_MODELS = ("llm", "llm_template", "tts")


@dataclass
class LiveSettings:
    triton_url: str
    model_urls: dict[str, str] = field(default_factory=dict)  # model -> host:port overrides
    wav_path: Path = Path("out/session.wav")
    playback: bool = True  # use the sound device when there is one
    vts_url: str | None = "ws://localhost:8001"
    vts_token_path: Path | None = None
    memory_dir: Path | None = None  # None: memory only for this session
    use_memory: bool = True
    metrics_jsonl: Path | None = None
    prometheus_port: int = 0
    personas: tuple[Persona, ...] = DEFAULT_PERSONAS
    cohost_every: int = 3
    triton_metrics_url: str | None = None  # e.g. http://127.0.0.1:8002/metrics, for the memory watch
    timeouts: CallTimeouts = CallTimeouts()
    loop: LoopOptions = LoopOptions()


Printer = Callable[[str], None]


class LiveSession:
    def __init__(self, settings: LiveSettings, *, printer: Printer = print) -> None:
        self.settings = settings
        self.print = printer
        self.models = TritonModels(settings.triton_url, settings.model_urls, timeouts=settings.timeouts)
        self.queue = ChatQueue()
        self.metrics = TurnMetrics(jsonl=settings.metrics_jsonl, prometheus_port=settings.prometheus_port)
        self.vts: Any = None
        self.repliers: list[Any] = []
        self.loop: TurnLoop | None = None
        self.source_errors: list[str] = []

    async def check_models(self) -> list[str]:
        problems = []
        for model in REQUIRED_MODELS:
            ok, detail = await self.models.ready(model)
            if not ok:
                problems.append(detail)
        return problems

    async def _said(self, persona: Persona, message: ChatMessage, spoken: str, record: dict[str, Any]) -> None:
        status = (
            " (interrupted)" if record["interrupted"] else f" (failed: {record['failed']})" if record["failed"] else ""
        )
        self.print(f"{persona.name}: {spoken or '…'}{status}")
        self.print(timings_line(record))
        for replier in self.repliers:
            if message.source == replier.name and replier.can_reply and spoken:
                await replier.reply(spoken, parent_message_id=message.message_id)

    async def run(self, sources: list[ChatSource]) -> int:
        problems = await self.check_models()
        if problems:
            for problem in problems:
                self.print(f"error: {problem}")
            self.print("is tritonserver running? `make serve` starts it (or `make live` does everything)")
            await self.models.close()
            return 2
        device = None
        if self.settings.playback:
            available, detail = SoundDevice.describe()
            self.print(detail)
            if available:
                try:
                    device = SoundDevice(22050)
                except Exception as exc:
                    self.print(f"sound device unusable ({exc}); writing the WAV only")
        wav = SessionWav(self.settings.wav_path)
        avatar_backend = None
        if self.settings.vts_url:
            from spark_client.avatar.vts import VTubeStudioClient

            self.vts = VTubeStudioClient(
                self.settings.vts_url, token_path=self.settings.vts_token_path, face_found=True
            )
            await self.vts.start()
            avatar_backend = self.vts
        avatar = AvatarDriver(avatar_backend)
        player = Player(wav, device, on_block=avatar.on_block)
        memory = None
        if self.settings.use_memory:
            memory = await asyncio.to_thread(Memory, self.settings.memory_dir, Embedder(self.models))
        self.loop = TurnLoop(
            queue=self.queue,
            director=PersonaDirector(self.settings.personas, cohost_every=self.settings.cohost_every),
            llm=LLMClient(self.models),
            tts=TTSClient(self.models),
            player=player,
            avatar=avatar,
            metrics=self.metrics,
            memory=memory,
            options=self.settings.loop,
            on_said=self._said,
        )
        tasks: list[asyncio.Task[Any]] = []
        try:
            started = asyncio.get_running_loop().time()
            try:
                await self.loop.warm_up()
                self.print(f"warmed up in {asyncio.get_running_loop().time() - started:.1f} s")
            except ModelCallError as exc:
                self.print(f"warning: warm-up failed ({exc}); the first answers may be slow")
            tasks.append(asyncio.create_task(player.run(), name="player"))
            watch = MemoryWatch(
                metrics_url=self.settings.triton_metrics_url, warn=lambda m: self.print(f"warning: {m}")
            )
            tasks.append(asyncio.create_task(watch.run(), name="memory-watch"))
            source_tasks = [asyncio.create_task(s.run(self.queue), name=f"source-{s.name}") for s in sources]
            tasks += source_tasks
            loop_task = asyncio.create_task(self.loop.run(), name="turn-loop")
            tasks.append(loop_task)
            sources_done = asyncio.create_task(self._close_when_done(source_tasks), name="sources-watch")
            tasks.append(sources_done)
            await loop_task
            return 1 if self.source_errors else 0
        finally:
            await self._shutdown(tasks, player, avatar)

    async def _close_when_done(self, source_tasks: list[asyncio.Task[Any]]) -> None:
        results = await asyncio.gather(*source_tasks, return_exceptions=True)
        for task, result in zip(source_tasks, results, strict=False):
            if isinstance(result, Exception):
                self.source_errors.append(f"{task.get_name()}: {result}")
                self.print(f"error: chat source {task.get_name()} stopped: {result}")
        self.queue.close()

    async def _shutdown(self, tasks: list[asyncio.Task[Any]], player: Player, avatar: AvatarDriver) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        await avatar.aclose()
        if self.vts is not None:
            await self.vts.aclose()
        player.close()
        await self.models.close()
        self.metrics.close()
        with contextlib.suppress(Exception):
            self.print(f"session audio: {self.settings.wav_path}")
            self.print(self.metrics.summary_text())
