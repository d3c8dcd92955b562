"""The stream loop: one turn at a time, from a chat message to the persona's voice and avatar.

A turn: pick the message -> persona -> recall memories -> build the prompt -> stream the LLM
-> cut speakable pieces -> stream each through TTS while the LLM keeps going -> play in order
(lip sync follows the audio) -> remember what was actually said. An INTERRUPT event cancels the
running turn: its LLM and TTS requests are cancelled on the server, playback stops within a
block, and history keeps only what was heard. Moderation is applied the moment it arrives, to
history and memory, and cuts the answer to a message it removes.

A failure degrades the stream and never ends it: a failed or timed-out turn backs off, its
message is answered again if nothing of the answer was heard (once), no message is taken while
the models do not answer ready (a server restarting), and memory, metrics and the `on_said`
listener (console, Twitch replies) are each guarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from spark_client.avatar.driver import AvatarDriver
from spark_client.events import GAME_SOURCE, LINE_SOURCE, ChatMessage, ModerationEvent, Priority, TurnStarted
from spark_client.memory import Memory, Recalled
from spark_client.memory.writer import MemoryWriter
from spark_client.metrics import TurnMetrics, TurnTimings
from spark_client.personas.model import Persona
from spark_client.speech.answer import AnswerAttempts, guarded_answer
from spark_client.speech.chunker import SpeakablePiece, SpeechChunker
from spark_client.speech.guards import GuardContext, RecentAnswers, is_catchphrase, is_thin
from spark_client.speech.llm import CUTTABLE_PREFILL_CHUNK, LLMClient
from spark_client.speech.playback import PlaybackItem, Player
from spark_client.speech.triton import ModelCallError
from spark_client.speech.tts import TTSClient
from spark_client.turns import PROMPT_BUDGET_TOKENS
from spark_client.turns.coordinator import BANTER_CUE, COHOST_CUE, SILENCE_CUE, Coordinator, NextLine, TurnKind
from spark_client.turns.prompt import (
    DEFAULT_PROMPT_STYLE,
    ConversationHistory,
    Exchange,
    PromptStyle,
    build_messages,
    guard_context,
    memories_in_history,
    memory_speakers,
    shown_in_history,
)
from spark_client.turns.queue import ChatQueue, TurnRequest

log = logging.getLogger(__name__)

# A line about the game (sources/game.py) is a remark while playing: one sentence, then back to chat.
GAME_LINE_SENTENCES = 1


@dataclass(frozen=True)
class LoopOptions:
    # A turn is cut when it makes no progress (no LLM text, no synthesised audio, no audio played)
    # for `stall_timeout_s`, longer than the model calls' own deadlines (20 s to a first response,
    # 10 s between responses: speech/triton.py), which name what stalled; `turn_timeout_s` is
    # the most a whole turn may take, a long story spoken included.
    stall_timeout_s: float = 30.0
    turn_timeout_s: float = 600.0
    prompt_budget_tokens: int = PROMPT_BUDGET_TOKENS  # see spark_client/turns/__init__.py
    max_backoff_s: float = 30.0
    # After a failure that may pass, no message is taken while the models do not answer ready (a
    # server restarting), probed every `ready_poll_s`, for at most `recovery_wait_s`.
    recovery_wait_s: float = 300.0
    ready_poll_s: float = 0.5
    cancel_wait_s: float = 5.0  # how long a cancelled turn may take to wind down
    synth_ahead_s: float = 4.0  # synthesise at most this much audio ahead of playback
    prefill_wait_s: float = 10.0  # how long a turn waits for the previous turn's prefix prefill
    # The prefill leaves this much of the budget for the next message (chat, context, memories),
    # so when the history window must drop old exchanges it drops them in the prefill, in quiet
    # time, and not in the next viewer's turn.
    prefill_reserve_tokens: int = 250
    # what a turn's read-ahead of its chat leaves of the budget for the memory block that follows
    memory_reserve_tokens: int = 80
    memory_timeout_s: float = 3.0  # a recall slower than this is skipped: the viewer is waiting
    summary_every: int = 8  # exchanges heard per summary written in quiet time
    final_summary_s: float = 3.0  # the end-of-stream summary's wait for the LLM (then extractive)
    prompt_style: PromptStyle = DEFAULT_PROMPT_STYLE  # how chat is framed (see perf quality)


async def _line_pieces(text: str) -> AsyncIterator[SpeakablePiece]:
    """A line said word for word, cut into speakable pieces as an answer would be (emotion tags
    like `[happy]` become expressions)."""
    chunker = SpeechChunker()
    for piece in (*chunker.feed(text), *chunker.flush()):
        yield piece


@dataclass
class _TurnState:
    number: int
    persona: Persona
    timings: TurnTimings
    request: TurnRequest
    kind: TurnKind = TurnKind.ANSWER
    pieces: list[SpeakablePiece] = field(default_factory=list)
    sent_chat: str = ""  # the last user message exactly as sent, so the next prompt shares it
    cut: asyncio.Event = field(default_factory=asyncio.Event)  # set when moderation removes the answer
    moderated: bool = False  # the answered message was removed: the turn leaves no trace
    moderation: list[ModerationEvent] = field(default_factory=list)  # arrived while this turn ran
    stopping: bool = False  # the loop itself is being cancelled
    failure: ModelCallError | None = None  # what the loop backs off for after the turn
    answer: AnswerAttempts | None = None  # the LLM's attempts and the guards that judged them
    memory_speakers: tuple[str, ...] = ()  # viewers the prompt's memory lines name (labels to the guards)
    steps: int = 0  # LLM deltas, pieces and audio chunks so far: what the stall watch sees move

    @property
    def generated(self) -> str:
        """The LLM's text exactly as generated (emotion tags included) for the attempt said."""
        return self.answer.generated if self.answer is not None else ""

    @property
    def reacting(self) -> bool:
        """A line nobody in chat asked for (interjection, banter, silence filler): no chat is shown."""
        return self.kind is not TurnKind.ANSWER

    @property
    def shown(self) -> tuple[ChatMessage, ...]:
        """The chat messages this turn's prompt showed (none for a co-host's reaction)."""
        return () if self.reacting else (self.request.answer, *self.request.context)


class TurnLoop:
    def __init__(
        self,
        *,
        queue: ChatQueue,
        coordinator: Coordinator,
        llm: LLMClient,
        tts: TTSClient,
        player: Player,
        avatar: AvatarDriver,
        metrics: TurnMetrics,
        memory: Memory | None = None,
        history: ConversationHistory | None = None,
        options: LoopOptions = LoopOptions(),
        on_said: Callable[[Persona, ChatMessage, str, dict[str, object]], Awaitable[None]] | None = None,
        on_turn: Callable[[TurnStarted], None] | None = None,
        models_ready: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.queue, self.coordinator, self.llm, self.tts = queue, coordinator, llm, tts
        self.queue.mention_names = tuple(n for p in coordinator.personas for n in (p.name, *p.aliases))
        self.player, self.avatar, self.metrics, self.memory = player, avatar, metrics, memory
        self.history = history or ConversationHistory()
        self.options = options
        self.on_said = on_said
        self.on_turn = on_turn  # told as each turn starts (the streamer's screen); must be quick
        self.models_ready = models_ready  # what keeps the models from answering (empty: ready)
        self._turns = 0
        self.failures = 0
        self.busy = False
        self.backoffs: list[float] = []  # the latest back-off delays, newest last
        self._prefill: asyncio.Task[None] | None = None
        self._reads: set[asyncio.Task[None]] = set()  # turns' chat reads their requests did not wait for
        # the other persona's prompt read while this one's audio plays (see _warm_partner)
        self._warming: tuple[Persona, asyncio.Task[None]] | None = None
        self._current: _TurnState | None = None  # the turn being played
        self._writer_stood_aside = False  # a memory write was cut for the turn starting
        self._warming_cut = False  # the other persona's prompt read was cut for the turn starting
        self._recent_answers = RecentAnswers()  # no sentence of the last answers is said again
        self._said: deque[tuple[float, str]] = deque(maxlen=16)  # (monotonic, words played), for the mic
        self.recap = ""  # "last time on stream", from earlier streams' summaries (see warm_up)
        self._quiet_since = time.time()  # wall clock: when the last turn ended (silence fillers)
        # what the server turned down (an adapter not built for this model, a voice it lacks; see
        # _turned_down): the persona goes on without it instead of failing every turn
        self._no_adapter: set[str] = set()
        self._no_voice: set[str] = set()
        # facts and summaries are written by the LLM in quiet time, never while a viewer waits
        self.writer = (
            MemoryWriter(memory, llm, quiet=self._quiet, summary_every=options.summary_every)
            if memory is not None
            else None
        )

    async def run(self) -> None:
        """Answers chat until the queue is closed and drained (or until cancelled)."""
        moderation = asyncio.create_task(self._apply_moderation(), name="moderation")
        writer = asyncio.create_task(self.writer.run(), name="memory-writer") if self.writer is not None else None
        try:
            await self._run()
        finally:
            warming = self._warming[1] if self._warming is not None else None
            owned = [t for t in (self._prefill, warming, *self._reads, moderation, writer) if t is not None]
            for task in owned:
                task.cancel()
            await asyncio.wait(owned, timeout=self.options.cancel_wait_s)
            await self._finish_memory()

    async def _finish_memory(self) -> None:
        """The stream's last exchanges go into a summary (also on Ctrl-C: bounded by
        `final_summary_s`, then written without the LLM)."""
        if self.writer is None:
            return
        try:
            await self.writer.finish(self.options.final_summary_s)
        except Exception as exc:  # memory is an extra: ending the stream must not fail on it
            log.warning("memory: the end-of-stream summary was not stored: %s", exc)

    def _quiet(self) -> bool:
        """No turn running, no chat waiting and no prefill: the LLM is free for memory work."""
        return not self.busy and not self.queue.pending and (self._prefill is None or self._prefill.done())

    async def _run(self) -> None:
        while True:
            next_up = await self._next_turn()
            if next_up is None:
                return
            self.busy = True
            # a memory write holding the LLM gives way now (it runs again in the next quiet time)
            self._writer_stood_aside = self.writer is not None and self.writer.stand_aside()
            try:
                if isinstance(next_up, NextLine):  # a quiet chat: the main persona fills it
                    request = TurnRequest(ChatMessage("stream", "", "", priority=Priority.NORMAL), ())
                    state = await self._play_turn(request, next_up.persona, self._silence_cue(), kind=next_up.kind)
                elif next_up.answer.source == LINE_SOURCE:  # the streamer's words for a persona
                    request = next_up
                    persona = self.coordinator.persona(request.answer.user) or self.coordinator.main
                    state = await self._play_turn(request, persona, request.answer.text, kind=TurnKind.LINE)
                else:
                    request = next_up
                    persona = self.coordinator.choose(request.answer)
                    # a viewer is waiting: the cores are theirs
                    self._warming_cut = self._stop_warming(unless=persona)
                    self.coordinator.answered(persona)
                    chat = self.options.prompt_style.chat(request.answer, request.context)
                    state = await self._play_turn(request, persona, chat)
                state = await self._follow_ups(state, request)
                if state.failure is not None:
                    await self._failed(state.failure, retried=state.timings.retried)
                elif self._heard(state) and self.queue.pending == 0:
                    self._start_prefill()
            finally:
                self.busy = False
                self._quiet_since = time.time()

    async def _next_turn(self) -> TurnRequest | NextLine | None:
        """The next chat message to answer or, when chat has been quiet long enough, the main
        persona's silence filler (None once the chat is closed and drained)."""
        while True:
            wait = self.coordinator.silence_wait(self._quiet_since)
            if wait is None or self.queue.closed or self.queue.paused:
                return await self.queue.next_turn()
            try:  # next_turn takes a message only when it returns: cancelling it loses nothing
                return await asyncio.wait_for(self.queue.next_turn(), timeout=wait + 0.01)
            except TimeoutError:
                if not self.queue.pending and (line := self.coordinator.silence_filler(self._quiet_since)):
                    self._save_state()
                    return line

    async def _follow_ups(self, state: _TurnState, request: TurnRequest) -> _TurnState:
        """The other persona's interjections and banter after `state`'s line, as the coordinator
        grants them; the duo's state is saved after every turn, with the decision that follows it."""
        while state.failure is None and self._heard(state):
            line = self.coordinator.follow_up(
                state.persona,
                state.timings.spoken,
                urgent_waiting=self.queue.urgent_pending,
                chat_waiting=self.queue.pending > 0,
            )
            if line is None:
                break
            self._save_state()  # the turn just heard and the line granted after it
            cue = (BANTER_CUE if line.kind is TurnKind.BANTER else COHOST_CUE).format(name=state.persona.name)
            state = await self._play_turn(request, line.persona, self.options.prompt_style.wrap([cue]), kind=line.kind)
        self._save_state()
        return state

    def _silence_cue(self) -> str:
        """Something to talk about: the last viewer line on stream, else last stream's recap."""
        viewers = [m for e in self.history.window() for m in e.messages if m.text.strip()]
        if viewers:
            said = " ".join(viewers[-1].text.split()[:16]).replace('"', "'")
            topic = f'what {viewers[-1].user} said earlier: "{said}"'
        elif self.recap:
            topic = f"something from last stream: {' '.join(self.recap.split()[:24])}"
        else:
            topic = "what you would like to do on stream today"
        return self.options.prompt_style.wrap([SILENCE_CUE.format(topic=topic)])

    def _save_state(self) -> None:
        try:
            self.coordinator.save()
        except Exception:  # the rhythm is an extra: the stream goes on
            log.exception("could not save the duo's state")

    @staticmethod
    def _heard(state: _TurnState) -> bool:
        return not state.timings.interrupted and not state.moderated

    # --- moderation --------------------------------------------------------------------------
    async def _apply_moderation(self) -> None:
        while True:
            await self._moderate(await self.queue.next_moderation())

    async def _moderate(self, event: ModerationEvent) -> None:
        """History and memory forget what `event` removes, now; the answer to a removed message
        stops (its streams are cancelled on the server) and leaves no trace."""
        removed = self.history.forget(event)
        current = self._current
        if current is not None:
            current.moderation.append(event)  # re-applied when its exchange is recorded
            if not current.reacting and event.removes(current.request.answer):
                current.moderated = True
                current.cut.set()
        if removed:
            log.info("moderation: %d exchange(s) dropped from the conversation history", removed)
        if self.writer is not None:
            self.writer.forget(event)
        await self._forget(event)

    async def _forget(self, event: ModerationEvent) -> None:
        if self.memory is not None:
            try:
                await self.memory.forget(event)
            except Exception as exc:  # memory is an extra: the stream goes on without it
                log.warning("memory: a moderated message could not be forgotten: %s", exc)

    def _start_prefill(self) -> None:
        """After a turn: the main persona's next prefix first. A read of the co-host's prompt
        still running (a long one: many exchanges since she last spoke) is cut for it and runs
        again after it (what it read stays in the server's cache): the next viewer's turn waits
        for the main prefix, never for the co-host's (seen as ~150 ms more on such turns)."""
        if self._prefill is None or self._prefill.done():
            main = self.coordinator.main
            cut = self._stop_warming(unless=main)
            self._prefill = asyncio.create_task(self._prefill_main(rewarm=cut), name="llm-prefill")

    async def _prefill_main(self, *, rewarm: bool) -> None:
        main = self.coordinator.main
        await self._prefill_next(main)
        if rewarm and not self.busy:  # a turn that started meanwhile has the cores
            self._warm_partner(main)

    async def _prefill_next(self, persona: Persona, prefill_chunk: int = 0) -> None:
        """Puts `persona`'s next prompt prefix (history with the exchange just heard) in the
        server's KV cache before it is needed, so a new message is the only text the LLM has to
        read when it arrives. It matters most when the history window has just dropped its oldest
        exchanges: then the whole history is new to the server (seconds of prefill on a CPU)."""
        budget = self.options.prompt_budget_tokens - self.options.prefill_reserve_tokens
        try:
            await self._prefill_prefix(persona, budget, prefill_chunk=prefill_chunk)
        except ModelCallError as exc:  # an optimisation only: the next turn prefills by itself
            log.debug("%s's prefix prefill skipped: %s", persona.name, exc)

    async def _prefill_prefix(
        self,
        persona: Persona,
        budget_tokens: int,
        *,
        chat: str | None = None,
        on_prefill: Callable[[int], None] | None = None,
        prefill_chunk: int = 0,
        sent: asyncio.Event | None = None,
    ) -> None:
        """Has the server read `persona`'s prompt up to the next chat message (history within
        `budget_tokens`) and generate one token, which leaves that prefix in its KV cache. With
        `chat`, the prompt holds that chat and is read up to its end only (what follows it, the
        end of the message, may not come next: a memory block does). `prefill_chunk`: see
        LLMClient.stream (work a viewer's turn may cut asks for CUTTABLE_PREFILL_CHUNK). `sent`
        is set as the request goes out (its call is open before anyone waiting on it runs)."""
        style = self.options.prompt_style
        messages = build_messages(
            persona,
            self.history,
            chat=style.empty_chat if chat is None else chat,  # empty: the prefix ends where a message starts
            memories=[],
            budget_tokens=budget_tokens,
            style=style,
            recap=self.recap,
            cast=self.coordinator.personas,
        )
        prompt = await self.llm.render(messages)
        if chat is not None and (end := prompt.text.rfind(chat)) >= 0:
            prompt = replace(prompt, text=prompt.text[: end + len(chat)])
        sampling = replace(persona.sampling, max_tokens=1)
        stream = self.llm.stream(
            prompt, sampling, lora_name=self._lora(persona), on_prefill=on_prefill, prefill_chunk=prefill_chunk
        )
        if sent is not None:
            sent.set()  # waiters run once this task waits for the first response, the call open by then
        async for _ in stream:
            pass

    async def _read_chat(
        self, persona: Persona, chat: str, on_prefill: Callable[[int], None], timings: TurnTimings, sent: asyncio.Event
    ) -> None:
        """Has the server read `persona`'s prompt for this turn up to the end of its chat while
        memory is recalled (an embedding and a Chroma query, ~30 ms): the memory block comes
        after the chat line (`memory_block`), so the turn's own request then reads only the block.
        The history is windowed as that request will be (its budget less the memory block's).
        The turn record gets how long it waited for a prefix read and how long it read."""
        started = time.monotonic()
        await self._wait_for_prefill(persona)
        reading = time.monotonic()
        timings.prefix_wait_ms = (reading - started) * 1000
        budget = self.options.prompt_budget_tokens - self.options.memory_reserve_tokens
        try:
            await self._prefill_prefix(persona, budget, chat=chat, on_prefill=on_prefill, sent=sent)
            timings.chat_read_ms = (time.monotonic() - reading) * 1000
        except ModelCallError as exc:  # an optimisation only: the turn's request reads the chat itself
            log.debug("%s's chat read-ahead skipped: %s", persona.name, exc)

    async def _wait_for_prefill(self, persona: Persona) -> None:
        # The prefill holds the KV cache this turn's prompt starts with; waiting for it is never
        # slower than prefilling the same prefix again, and it leaves the cores to one request.
        if self._prefill is not None and not self._prefill.done() and persona is self.coordinator.main:
            await asyncio.wait({self._prefill}, timeout=self.options.prefill_wait_s)
        if self._warming is not None and self._warming[0] is persona and not self._warming[1].done():
            await asyncio.wait({self._warming[1]}, timeout=self.options.prefill_wait_s)

    def _stop_warming(self, *, unless: Persona) -> bool:
        """Cuts the other persona's prompt read for a viewer's turn; whether one was running."""
        if self._warming is not None and self._warming[0] is not unless and not self._warming[1].done():
            self._warming[1].cancel()  # closing its stream cancels the request on the server
            return True
        return False

    def _warm_partner(self, speaker: Persona) -> None:
        """Once `speaker`'s answer is generated (its audio still playing), the server reads the
        other persona's prompt up to this turn into that persona's KV cache. When the other one
        follows (an interjection, banter), it then reads only this turn's exchange instead of
        all the history since it last spoke (seconds on 2 cores). A partner in its cooldown is
        warmed too: skipping it left its first line after the cooldown reading every exchange
        since (400-540 tokens, ~2.5 s, in the 50-turn perf run)."""
        partner = self.coordinator.co_host(speaker)
        if partner is None or self.queue.pending or (self._warming is not None and not self._warming[1].done()):
            return
        # in small steps: a viewer's turn cuts it (_stop_warming) and waits for the step in progress
        warm = self._prefill_next(partner, prefill_chunk=CUTTABLE_PREFILL_CHUNK)
        self._warming = (partner, asyncio.create_task(warm, name=f"llm-warm-{partner.name}"))

    async def warm_up(self) -> None:
        """Puts each persona's fixed prompt prefix in the server's KV cache and wakes the TTS, so
        the first viewer does not pay for cold starts. Earlier streams' summaries become the
        "last time on stream" part of the prompt first, so the cached prefix includes it."""
        if self.memory is not None:
            try:
                self.recap = await asyncio.wait_for(self.memory.recap(), timeout=self.options.memory_timeout_s)
            except Exception as exc:  # memory is an extra: the stream starts without the recap
                log.warning("memory: no 'last time on stream' recap: %s", exc or type(exc).__name__)
        for persona in self.coordinator.personas:
            try:
                await self._prefill_prefix(persona, budget_tokens=0)
            except ModelCallError as exc:
                if not self._turned_down(persona, exc):
                    raise
                await self._prefill_prefix(persona, budget_tokens=0)
            try:
                async for _ in self.tts.stream("Hi.", voice=self._voice(persona), speed=persona.speed):
                    pass
            except ModelCallError as exc:
                if not self._turned_down(persona, exc):
                    raise

        main = self.coordinator.main
        if mood := self.coordinator.mood(main):  # after a restart the avatar wears the face it left with
            self.avatar.expression(mood, hotkey=main.hotkey_map.get(mood))

    def _turned_down(self, persona: Persona, exc: ModelCallError) -> bool:
        """Whether `exc` is the server turning down `persona`'s adapter or voice; if so the persona
        goes on without it from now on. Found at warm-up, or by a turn when no warm-up found it
        (it failed for another reason, or the server came back with other engines). Only a
        request the server refused counts: a failure that may pass keeps both."""
        if exc.retryable:
            return False
        said = str(exc).lower()
        if persona.lora_name is not None and persona.name not in self._no_adapter and "adapter" in said:
            log.warning("%s speaks without its adapter %r: %s", persona.name, persona.lora_name, exc)
            self._no_adapter.add(persona.name)
            return True
        if persona.voice is not None and persona.name not in self._no_voice and "voice" in said:
            log.warning("%s speaks with the server's default voice: %s", persona.name, exc)
            self._no_voice.add(persona.name)
            return True
        return False

    def _lora(self, persona: Persona) -> str | None:
        return None if persona.name in self._no_adapter else persona.lora_name

    def _voice(self, persona: Persona) -> str | None:
        return None if persona.name in self._no_voice else persona.voice

    @property
    def current_turn(self) -> int | None:
        """The number of the turn being generated or played, if any."""
        return self._current.number if self._current is not None else None

    def recent_speech(self, since: float) -> str:
        """What the personas said (played) since the monotonic time `since`, and all the running
        turn has generated: the microphone compares a transcript with it to catch their own voice."""
        said = [text for at, text in self._said if at >= since]
        if self._current is not None:
            said += [piece.text for piece in self._current.pieces]
        return " ".join(said)

    async def idle(self, poll_s: float = 0.1) -> None:
        """Waits until no turn is running and no chat is waiting."""
        # Two conditions owned by different objects; a 0.1 s poll is cheap and cannot miss either.
        while self.busy or self.queue.pending:  # noqa: ASYNC110
            await asyncio.sleep(poll_s)

    async def _play_turn(
        self,
        request: TurnRequest,
        persona: Persona,
        chat: str,
        *,
        kind: TurnKind = TurnKind.ANSWER,
    ) -> _TurnState:
        self._turns += 1
        received = request.answer.received_at if kind is TurnKind.ANSWER else time.monotonic()
        timings = TurnTimings(self._turns, request.answer.user, persona.name, received, kind=kind.value)
        timings.writer_stood_aside, self._writer_stood_aside = self._writer_stood_aside, False
        timings.warming_cut, self._warming_cut = self._warming_cut, False
        state = _TurnState(self._turns, persona, timings, request, kind)
        timings.mark("queue_wait_ms")
        # Only an interrupt offered from now on cuts this turn (one answering an `!ask` was
        # offered before it, and a bare `!stop` while nothing played has nothing to cut).
        mark = self.queue.interrupt_mark()
        self._current = state
        if self.on_turn is not None:
            try:
                answering = None if state.reacting else request.answer
                self.on_turn(TurnStarted(state.number, persona.name, kind.value, answering))
            except Exception:  # a listener must never stop the turn
                log.exception("the turn listener failed")
        turn = asyncio.create_task(self._speak(state, request.answer, chat), name=f"turn-{state.number}")
        interrupt = asyncio.create_task(self.queue.wait_interrupt(mark), name=f"turn-{state.number}-interrupt")
        moderated = asyncio.create_task(state.cut.wait(), name=f"turn-{state.number}-moderated")
        # a persona-to-persona line stops at once for a viewer who should not wait (a mention, bits,
        # the streamer): the viewer is answered next
        watchers = {interrupt, moderated}
        # so does a remark on the game (routine narration: chat's priority) for such a viewer
        game_remark = request.answer.source == GAME_SOURCE and request.answer.priority < Priority.HIGH
        if kind.persona_to_persona or (kind is TurnKind.ANSWER and game_remark):
            mark_urgent = self.queue.urgent_mark()
            watchers.add(asyncio.create_task(self.queue.wait_urgent(mark_urgent), name=f"turn-{state.number}-urgent"))
        stall = asyncio.create_task(self._stalled(state), name=f"turn-{state.number}-stall")
        watchers.add(stall)
        try:
            done, _ = await asyncio.wait({turn, *watchers}, return_when=asyncio.FIRST_COMPLETED)
            if turn not in done:
                if stall in done:
                    timings.failed = stall.result()
                    state.failure = ModelCallError("turn", timings.failed, retryable=True)
                else:
                    timings.interrupted = True
                await self._stop(turn, state)
            elif (error := turn.exception()) is not None:
                raise error
            else:
                self.failures = 0
        except ModelCallError as exc:
            timings.failed = str(exc)
            state.failure = exc
            if self._turned_down(state.persona, exc):  # answered again without the adapter or voice
                state.failure = ModelCallError("turn", str(exc), retryable=True)
        except asyncio.CancelledError:  # the loop is stopping: this turn must not outlive it
            state.stopping = True
            timings.interrupted = True
            await self._stop(turn, state)
            raise
        except Exception as exc:  # a bug in one turn must not end the stream
            log.exception("turn %d failed", state.number)
            timings.failed = repr(exc)
            state.failure = ModelCallError("turn", repr(exc), retryable=True)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.wait(watchers, timeout=self.options.cancel_wait_s)
            try:
                await self._finish(state, request.answer, chat)
            finally:
                self._current = None  # moderation arriving while the turn is recorded still finds it
        return state

    async def _stalled(self, state: _TurnState) -> str:
        """Returns why `state`'s turn should be cut, once it has made no progress for the stall
        limit or run for the whole-turn limit. Progress: LLM text, a piece, synthesised audio,
        audio played (its unplayed seconds move), or playback paused (the streamer is talking)."""
        options = self.options
        started = last = time.monotonic()
        seen: tuple[int, float] | None = None
        while True:
            await asyncio.sleep(min(0.5, options.stall_timeout_s / 4))
            now = time.monotonic()
            if now - started >= options.turn_timeout_s:
                return f"turn exceeded {options.turn_timeout_s:g} s"
            mark = (state.steps, self.player.unplayed_seconds(state.number))
            if mark != seen or self.player.paused:
                seen, last = mark, now
            elif now - last >= options.stall_timeout_s:
                return f"turn made no progress for {options.stall_timeout_s:g} s"

    async def _stop(self, turn: asyncio.Task[None], state: _TurnState) -> None:
        """Cuts `state`'s turn: playback within a block, its server streams, the mouth."""
        self.player.interrupt(state.number)
        if not turn.done():
            turn.cancel()
            await asyncio.wait({turn}, timeout=self.options.cancel_wait_s)
            if not turn.done():
                log.warning("turn %d still winding down after %.0f s", state.number, self.options.cancel_wait_s)
        try:
            await asyncio.wait_for(self.avatar.silence(), timeout=self.options.cancel_wait_s)
        except Exception:  # the avatar must never hold up the voice
            log.exception("could not close the avatar's mouth")

    async def _failed(self, exc: ModelCallError, *, retried: bool) -> None:
        self.failures += 1
        delay = min(self.options.max_backoff_s, 2.0 ** (self.failures - 1)) if exc.retryable else 0.0
        log.warning(
            "turn failed (%s)%s; %d failure(s) in a row%s",
            exc,
            ": its message will be answered again" if retried else "",
            self.failures,
            f", next turn in {delay:.1f} s" if delay else "",
        )
        self.backoffs.append(delay)
        del self.backoffs[:-100]
        if delay:
            await asyncio.sleep(delay)
        if exc.retryable:
            await self._wait_for_models()

    async def _wait_for_models(self) -> None:
        """Takes no message while the models do not answer ready (a server restarting: turns
        taken meanwhile would fail and their messages be lost), for at most `recovery_wait_s`;
        then turns are tried again and back off as they fail."""
        if self.models_ready is None:
            return
        options = self.options
        started = time.monotonic()
        waiting = False
        while True:
            try:
                problems = await asyncio.wait_for(self.models_ready(), timeout=max(options.ready_poll_s, 2.0))
            except TimeoutError:
                problems = ["no answer to the readiness check"]
            except Exception as exc:  # the check itself is broken: go on as without it
                log.warning("could not ask the models whether they are ready: %s", exc)
                return
            waited = time.monotonic() - started
            if not problems:
                if waiting:
                    log.warning("the models are ready again after %.1f s", waited)
                return
            if waited >= options.recovery_wait_s:
                log.warning(
                    "the models are still not ready after %.0f s (%s): turns are tried again", waited, problems[0]
                )
                return
            if not waiting:
                log.warning("waiting for the models before the next turn: %s", "; ".join(dict.fromkeys(problems)))
                waiting = True
            await asyncio.sleep(options.ready_poll_s)

    def _retry(self, state: _TurnState) -> bool:
        """Whether the message of `state`'s failed turn goes back to the queue to be answered again
        (`ChatQueue.retry`, once): a viewer's message or the streamer's line, a failure that may
        pass (a server restarting, a stall), and nothing of the answer heard."""
        failure, timings = state.failure, state.timings
        if failure is None or not failure.retryable or state.moderated or state.stopping or timings.interrupted:
            return False
        if (
            state.kind not in (TurnKind.ANSWER, TurnKind.LINE)
            or timings.spoken
            or "first_audio_out_ms" in timings.marks
        ):
            return False
        return self.queue.retry(state.request)

    async def _speak(self, state: _TurnState, message: ChatMessage, chat: str) -> None:
        timings = state.timings
        pieces: asyncio.Queue[SpeakablePiece | None] = asyncio.Queue()

        def seen(delta: str) -> None:
            state.steps += 1
            timings.mark("llm_first_token_ms")

        if state.kind is TurnKind.LINE:  # the streamer's words: no memory, no prompt, no LLM
            timings.mark("prompt_build_ms")
            stream = _line_pieces(chat)
        else:
            stream = await self._answer(state, message, chat, seen)

        async def generate() -> None:
            try:
                async for piece in stream:
                    state.steps += 1
                    timings.mark("first_piece_ms")
                    pieces.put_nowait(piece)
            finally:
                pieces.put_nowait(None)
            self._warm_partner(state.persona)

        async def speak() -> None:
            resting = state.persona.resting_emotion
            unshown: list[str] = []  # tags of pieces the voice made silent (only emotes, say)
            while (piece := await pieces.get()) is not None:
                if unshown:
                    piece.emotions[:0] = [e for e in unshown if e not in piece.emotions]
                    unshown = []
                if not state.pieces and not piece.emotions and resting:
                    piece.emotions.append(resting)
                await self.player.wait_ahead_below(state.number, self.options.synth_ahead_s)
                state.pieces.append(piece)
                first = True
                voice = timings.voice = self._voice(state.persona)
                async for chunk in self.tts.stream(piece.text, voice=voice, speed=state.persona.speed):
                    state.steps += 1
                    timings.mark("tts_first_chunk_ms")
                    on_start = self._expressions(state.persona, piece.emotions, timings) if first else None
                    self.player.enqueue(
                        PlaybackItem(
                            state.number,
                            piece.index,
                            chunk.pcm,
                            chunk.sample_rate,
                            on_start,
                            timing=chunk.timing,
                            speaker=state.persona.name,
                        )
                    )
                    first = False
                if first:  # no sound: its expression starts with the next piece's audio
                    unshown = piece.emotions
            await self.player.drain(state.number)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(generate(), name=f"turn-{state.number}-llm")
                group.create_task(speak(), name=f"turn-{state.number}-tts")
        except* ModelCallError as errors:
            raise errors.exceptions[0] from None

    async def _answer(
        self, state: _TurnState, message: ChatMessage, chat: str, on_delta: Callable[[str], None]
    ) -> AsyncIterator[SpeakablePiece]:
        """The LLM's answer for `state`'s turn as the guards let it be said (memories recalled and
        the prompt built first)."""
        timings = state.timings

        def read_ahead(tokens: int) -> None:  # what the chat read read, whichever first response comes first
            timings.prefill_tokens = tokens + (timings.prefill_tokens or 0)

        reading, sent = None, asyncio.Event()
        if not state.reacting and self.memory is not None:
            reading = asyncio.create_task(
                self._read_chat(state.persona, chat, read_ahead, timings, sent), name=f"turn-{state.number}-read-chat"
            )
        try:
            recalled = Recalled() if state.reacting else await self._recall(message)
            if reading is not None and not sent.is_set():  # still behind a prefix read: the answer waits too
                await asyncio.wait({reading}, timeout=self.options.prefill_wait_s)
        except BaseException:
            if reading is not None:
                reading.cancel()  # closing its stream cancels the request on the server
            raise
        if reading is not None and not reading.done():
            if sent.is_set():
                # Not waited for: the server runs one generation at a time, in the order requests
                # come, so this turn's request (sent ~40 ms after the read, once memory is recalled)
                # starts the moment the read ends, with no round trip to this client and back in
                # between, and finds the chat line in the KV cache the read left.
                self._reads.add(reading)
                reading.add_done_callback(self._reads.discard)
            else:
                reading.cancel()
        timings.memory_tokens, timings.recall_ms = recalled.tokens, recalled.ms
        memories = timings.memories = list(recalled.lines)
        messages = build_messages(
            state.persona,
            self.history,
            chat=chat,
            memories=memories,
            budget_tokens=self.options.prompt_budget_tokens,
            style=self.options.prompt_style,
            recap=self.recap,
            cast=self.coordinator.personas,
        )
        state.sent_chat = messages[-1]["content"]
        state.memory_speakers = memory_speakers(messages)
        prompt = await self.llm.render(messages)
        await self._wait_for_prefill(state.persona)
        timings.mark("prompt_build_ms")

        sampling = replace(state.persona.sampling, seed=state.persona.sampling.seed + state.number)

        answered = False

        def prefilled(tokens: int) -> None:  # the first attempt's: the one the turn's timings measure
            nonlocal answered
            if not answered:
                answered = True
                timings.prefill_tokens = tokens + (timings.prefill_tokens or 0)

        def server_first_token(ms: float) -> None:  # the first attempt's, as above
            if timings.server_first_token_ms is None:
                timings.server_first_token_ms = ms

        answer = guarded_answer(
            self.llm,
            prompt,
            sampling,
            self._guard_context(state),
            recent=self._recent_answers,
            lora_name=self._lora(state.persona),
            on_prefill=prefilled,
            on_first_token=server_first_token,
        )
        state.answer = answer
        return answer.pieces(on_delta=on_delta)

    def _guard_context(self, state: _TurnState) -> GuardContext:
        request = state.request
        context = guard_context(
            state.persona,
            self.coordinator.personas,
            state.shown,
            # a reaction shows no chat; memory lines name viewers the chat may not
            speakers=(*(m.user for m in (request.answer, *request.context)), *state.memory_speakers),
            style=self.options.prompt_style,
        )
        if request.answer.source == GAME_SOURCE and not state.reacting:  # a remark on the game, not a speech
            return replace(context, max_sentences=min(context.max_sentences, GAME_LINE_SENTENCES))
        return context

    async def _recall(self, message: ChatMessage) -> Recalled:
        if self.memory is None:
            return Recalled()
        started = time.perf_counter()
        try:
            # recent exchanges are in the history already: the budget goes to older memories
            # and memories shown in an earlier turn's block that the history still has are not sent again
            recall = self.memory.recall(
                message, exclude=shown_in_history(self.history), shown=memories_in_history(self.history)
            )
            return await asyncio.wait_for(recall, timeout=self.options.memory_timeout_s)
        except Exception as exc:  # TimeoutError included: the turn goes on without memories
            log.warning("memory recall skipped for this turn: %s", exc or type(exc).__name__)
            return Recalled(ms=(time.perf_counter() - started) * 1000)

    def _expressions(self, persona: Persona, emotions: list[str], timings: TurnTimings) -> Callable[[], None] | None:
        if not emotions:
            return None
        hotkeys = persona.hotkey_map

        def show() -> None:
            for name in emotions:
                timings.emotions.append(name)
                self.coordinator.felt(persona, name)
                self.avatar.expression(name, hotkey=hotkeys.get(name))

        return show

    def spoken_text(self, state: _TurnState) -> str:
        """The words that were actually played: whole pieces, and the heard part of a cut one."""
        words: list[str] = []
        for piece in state.pieces:
            progress = self.player.progress.get((state.number, piece.index))
            if progress is None or progress.played == 0:
                break
            piece_words = piece.text.split()
            if progress.played >= progress.queued and not state.timings.interrupted:
                words.extend(piece_words)
                continue
            fraction = progress.played / max(1, progress.queued)
            heard = piece_words[: int(len(piece_words) * fraction)]
            words.extend(heard)
            if fraction < 1.0:
                words.append("—")
                break
        return " ".join(words)

    async def _finish(self, state: _TurnState, message: ChatMessage, chat: str) -> None:
        """Records the turn: timings, history, memory, then tells `on_said`. Each step is
        guarded on its own, so a full disk or a memory failure costs only that step."""
        timings = state.timings
        try:
            first_audio = self.player.first_audio_at.get(state.number)
            if first_audio is not None:
                timings.mark("first_audio_out_ms", first_audio)
            timings.recorded_s = self.player.recorded_at.get(state.number)
            first_mouth = self.avatar.first_mouth_at.get(state.number)
            if first_mouth is not None:
                timings.mark("first_mouth_ms", first_mouth)
            timings.mark("total_ms")
            timings.spoken = self.spoken_text(state)
        finally:
            self.player.forget(state.number)
            self.avatar.forget(state.number)
        if state.answer is not None:
            timings.guards = state.answer.reasons
        # A bare catchphrase, or a thin answer ("I'm lost... Stay sparky!"), is no answer to show
        # the model again or to remember: a small model copies its own bare sign-off until every
        # answer is one, and writes shorter answers the more short ones it sees.
        spoken, catchphrase = timings.spoken, state.persona.catchphrase
        thin = is_catchphrase(spoken, catchphrase) or (not timings.interrupted and is_thin(spoken, catchphrase))
        timings.retried = self._retry(state)
        if state.moderated:
            timings.failed = timings.failed or "moderated"
        elif state.kind is not TurnKind.LINE:  # the streamer's words are no exchange with chat
            self._record_history(state, chat, thin=thin)
            if timings.spoken:
                self._recent_answers.add(timings.spoken)
        if timings.spoken:
            self._said.append((time.monotonic(), timings.spoken))
        # The game's narration is no viewer to remember.
        remembered = message.source != GAME_SOURCE and not (state.reacting or state.moderated or state.stopping)
        if self.memory is not None and timings.spoken and remembered:
            try:
                if not thin:
                    await self.memory.remember(message, timings.spoken, state.persona.name)
            except Exception as exc:  # memory is an extra: the stream goes on without it
                log.warning("memory: turn %d not stored: %s", state.number, exc)
            if self.writer is not None and not timings.interrupted:
                self.writer.heard(message, state.persona.name)
            for event in state.moderation:  # removed while it was being stored
                if event.removes(message):
                    await self._forget(event)
        try:
            record = self.metrics.add(timings)
        except Exception:
            log.exception("could not record the metrics of turn %d", state.number)
            record = timings.record()
        if self.on_said is not None and not state.stopping:
            try:
                await self.on_said(state.persona, message, "" if state.moderated else timings.spoken, record)
            except Exception:
                log.exception("the listener of turn %d failed", state.number)

    def _record_history(self, state: _TurnState, chat: str, *, thin: bool) -> None:
        # A turn heard in full keeps the LLM's own text (tags included): the server's KV cache
        # already holds exactly those tokens, so the next prompt reuses them instead of reading a
        # re-worded copy. A cut turn keeps only what was heard.
        # A thin answer (only the catchphrase, or a few words before it) is kept out, like one
        # nobody heard.
        timings = state.timings
        untouched = state.answer is None or not state.answer.reasons  # the guards cut or dropped nothing
        complete = not timings.interrupted and not timings.failed and untouched and state.generated.strip()
        self.history.add(
            Exchange(
                chat=state.sent_chat or chat,
                spoken="" if thin else timings.spoken,
                persona=state.persona.name,
                generated=state.generated if complete and not thin else "",
                messages=state.shown,
            )
        )
        for event in state.moderation:  # a context line removed while this turn ran
            self.history.forget(event)
