"""Memory written in quiet time: facts from what viewers say about themselves, and a summary of
every few exchanges, by the served LLM, never while a viewer waits.

A job starts only while the stream is quiet (no turn running, no chat waiting, no prefill) and its
LLM part is cancelled, with its stream on the server, the moment that changes; it goes back to the
front of the line and goes on at the next quiet moment from where it was cut: the text written so
far ends the prompt, so the server (whose cache holds those tokens) writes only the rest. Without
that, a job needing more time than a busy stream's gaps (a summary: ~60 tokens) started over in
every gap and never ended, and every job behind it waited. What the LLM wrote is stored in a
separate step that nothing cuts, so a job is never stored twice. The line is bounded: past `max_jobs` the
oldest job is dropped (and counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from spark_client.events import ChatMessage, ModerationEvent
from spark_client.memory.extract import (
    FACT_SAMPLING,
    SUMMARY_SAMPLING,
    ExchangeLine,
    checked_summary,
    extractive_summary,
    fact_messages,
    grounded_facts,
    summary_messages,
)
from spark_client.memory.recall import disclosed, self_disclosure
from spark_client.speech.llm import CUTTABLE_PREFILL_CHUNK, RenderedPrompt, SamplingOptions
from spark_client.speech.triton import ModelCallError

log = logging.getLogger(__name__)


class LLM(Protocol):
    async def render(self, messages: list[dict[str, str]]) -> RenderedPrompt: ...

    def stream(  # noqa: ANN201
        self, prompt: RenderedPrompt, options: SamplingOptions, *, lora_name: str | None = None, prefill_chunk: int = 0
    ): ...


class FactSink(Protocol):
    async def remember_fact(self, message: ChatMessage, fact: str, persona: str) -> None: ...

    async def remember_summary(self, text: str, users: list[str]) -> None: ...


@dataclass
class FactJob:
    message: ChatMessage
    persona: str
    tries: int = 0
    written: list[str] = field(default_factory=list)  # the LLM's deltas before a turn cut it


@dataclass
class SummaryJob:
    lines: tuple[ExchangeLine, ...]
    tries: int = 0
    written: list[str] = field(default_factory=list)


@dataclass
class WriterStats:
    facts: int = 0  # facts stored (new or updated)
    summaries: int = 0
    cancelled: int = 0  # jobs cut short by chat, to go on later
    resumed: int = 0  # LLM streams that went on from text a cut one had written
    failed: int = 0  # jobs given up after `max_tries`
    dropped: int = 0  # jobs dropped because the line was full
    runs: list[str] = field(default_factory=list)  # "fact" / "summary", in the order they finished


class MemoryWriter:
    def __init__(
        self,
        memory: FactSink,
        llm: LLM,
        *,
        quiet: Callable[[], bool],
        summary_every: int = 8,
        max_jobs: int = 200,
        max_tries: int = 3,
        poll_s: float = 0.05,
    ) -> None:
        if summary_every < 1 or max_jobs < 1:
            raise ValueError("summary_every and max_jobs must be at least 1")
        self.memory, self.llm, self.quiet = memory, llm, quiet
        self.summary_every, self.max_tries, self.poll_s = summary_every, max_tries, poll_s
        self.jobs: deque[FactJob | SummaryJob] = deque()
        self._max_jobs = max_jobs
        self._lines: list[ExchangeLine] = []  # heard since the last summary
        self._wake = asyncio.Event()
        self._aside = asyncio.Event()  # the stream wants the LLM now: cut the running job at once
        self._running = False
        self.stats = WriterStats()

    # --- what the turn loop tells it ----------------------------------------------------------
    def heard(self, message: ChatMessage, persona: str) -> None:
        """An exchange was heard in full: its facts are worth looking for when the viewer talked
        about themselves, and every `summary_every` exchanges make a summary."""
        if self_disclosure(message.text):
            self._add(FactJob(message, persona))
        self._lines.append(ExchangeLine(message.user, message.text, message.user_id, message.message_id))
        if len(self._lines) >= self.summary_every:
            self._add(SummaryJob(tuple(self._lines)))
            self._lines = []

    def stand_aside(self) -> bool:
        """A turn starts: a job running now is cancelled at once (its LLM stream closed, so the
        server stops it), not at the next `poll_s` check. Returns whether one was running."""
        if not self._running:
            return False
        self._aside.set()
        return True

    def forget(self, event: ModerationEvent) -> None:
        """Moderation: nothing is written from a removed message (the store forgets what was)."""
        kept: deque[FactJob | SummaryJob] = deque()
        for job in self.jobs:
            if isinstance(job, FactJob):
                if not event.removes(job.message):
                    kept.append(job)
            else:
                lines = tuple(line for line in job.lines if not _removes(event, line))
                if lines:
                    kept.append(SummaryJob(lines, job.tries))
        self.jobs = kept
        self._lines = [line for line in self._lines if not _removes(event, line)]

    def _add(self, job: FactJob | SummaryJob) -> None:
        self.jobs.append(job)
        while len(self.jobs) > self._max_jobs:
            self.jobs.popleft()
            self.stats.dropped += 1
        self._wake.set()

    # --- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Runs jobs in quiet time until cancelled."""
        while True:
            while not self.jobs:
                self._wake.clear()
                await self._wake.wait()
            while not self.quiet():  # noqa: ASYNC110 - two owners' state: the loop and the queue
                await asyncio.sleep(self.poll_s)
            job = self.jobs.popleft()
            draft = await self._draft_in_quiet(job)
            if draft is None:
                continue
            # the LLM's part is done: what it wrote is stored whatever happens now (a turn starting
            # does not cut a write that a thread is already making, and the job is not run twice)
            store = asyncio.create_task(self._store(job, draft), name="memory-store")
            try:
                await asyncio.shield(store)
            except asyncio.CancelledError:
                await asyncio.wait({store}, timeout=5.0)
                raise
            except Exception as exc:
                self._failed(job, exc)

    async def _draft_in_quiet(self, job: FactJob | SummaryJob) -> list[str] | str | None:
        """The LLM's part of `job`, cut (and the job put back in front) when a turn starts or chat
        arrives; None when it was cut or failed."""
        self._aside.clear()
        task = asyncio.create_task(self._draft(job), name="memory-write")
        aside = asyncio.create_task(self._aside.wait(), name="memory-write-aside")
        self._running = True
        try:
            while not task.done():
                await asyncio.wait({task, aside}, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                if not task.done() and (aside.done() or not self.quiet()):
                    task.cancel()  # the LLM stream is closed: cancelled on the server
                    await asyncio.wait({task})
                    self.jobs.appendleft(job)
                    self.stats.cancelled += 1
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
            raise
        finally:
            self._running = False
            aside.cancel()
        if task.cancelled():
            return None
        if (exc := task.exception()) is not None:
            self._failed(job, exc)
            return None
        return task.result()

    def _failed(self, job: FactJob | SummaryJob, exc: BaseException) -> None:
        job.tries += 1
        job.written.clear()  # a failed stream's text is not built on
        if job.tries < self.max_tries:
            self.jobs.append(job)  # retried later, after what is waiting
        else:
            self.stats.failed += 1
        log.warning("memory: writing a %s failed (%s)", _kind(job), exc)

    async def finish(self, timeout: float) -> None:
        """End of the stream: the summaries still to write, and one of what was heard since the
        last, by the LLM within `timeout` seconds in all, the rest extractive. Fact jobs still
        waiting are dropped (counted): the exchanges they came from are stored."""
        pending = [job.lines for job in self.jobs if isinstance(job, SummaryJob)]
        self.stats.dropped += sum(isinstance(job, FactJob) for job in self.jobs)
        self.jobs.clear()
        if self._lines:
            pending.append(tuple(self._lines))
            self._lines = []
        deadline = asyncio.get_running_loop().time() + timeout
        for lines in pending:
            left = deadline - asyncio.get_running_loop().time()
            try:
                if left <= 0:
                    raise TimeoutError
                text = await asyncio.wait_for(self._summary_text(lines), left)
            except (TimeoutError, ModelCallError) as exc:
                log.info("memory: end-of-stream summary written without the LLM (%s)", str(exc) or "timed out")
                text = extractive_summary(lines)
            # stored outside the LLM's time limit: a slow store does not add the extractive one too
            await self.memory.remember_summary(text, _users(lines))
            self.stats.summaries += 1

    async def _draft(self, job: FactJob | SummaryJob) -> list[str] | str:
        """What the LLM makes of `job`, checked: the facts grounded in the viewer's words, or the
        summary text. Nothing is stored here (a cut job leaves no trace)."""
        if isinstance(job, FactJob):
            message = job.message
            output = await self._generate(fact_messages(message.user, message.text), FACT_SAMPLING, job.written)
            # grounded in what the viewer told about themselves, not in a question or request beside it
            return grounded_facts(output, message.user, disclosed(message.text))
        return await self._summary_text(job.lines, job.written)

    async def _store(self, job: FactJob | SummaryJob, draft: list[str] | str) -> None:
        if isinstance(job, FactJob) and isinstance(draft, list):
            for fact in draft:
                await self.memory.remember_fact(job.message, fact, job.persona)
                self.stats.facts += 1
        elif isinstance(job, SummaryJob) and isinstance(draft, str):
            await self.memory.remember_summary(draft, _users(job.lines))
            self.stats.summaries += 1
        self.stats.runs.append(_kind(job))

    async def _summary_text(self, lines: tuple[ExchangeLine, ...], written: list[str] | None = None) -> str:
        messages = summary_messages([f"{x.user}: {x.said}" for x in lines])
        output = await self._generate(messages, SUMMARY_SAMPLING, [] if written is None else written)
        return checked_summary(output, lines)

    async def _generate(self, messages: list[dict[str, str]], sampling: SamplingOptions, written: list[str]) -> str:
        """The LLM's text for `messages`, going on from `written` (what a cut stream wrote before;
        greedy sampling writes the same text whole or in parts). Deltas are added to `written` as
        they come, so a cut leaves them for the next try."""
        prompt = await self.llm.render(messages)
        # each delta is at least one token: the budget left is at most this
        left = sampling.max_tokens - len(written)
        if left <= 0:
            return "".join(written)
        if written:
            self.stats.resumed += 1
            prompt = replace(prompt, text=prompt.text + "".join(written))
            sampling = replace(sampling, max_tokens=left)
        stream = self.llm.stream(prompt, sampling, prefill_chunk=CUTTABLE_PREFILL_CHUNK)  # a turn cuts it
        try:
            async for delta in stream:
                written.append(delta)
        finally:
            await stream.aclose()
        return "".join(written)


def _removes(event: ModerationEvent, line: ExchangeLine) -> bool:
    return event.removes(
        ChatMessage(source="", user=line.user, text=line.said, user_id=line.user_id, message_id=line.message_id)
    )


def _users(lines: tuple[ExchangeLine, ...]) -> list[str]:
    return sorted({line.user.casefold() for line in lines})


def _kind(job: FactJob | SummaryJob) -> str:
    return "fact" if isinstance(job, FactJob) else "summary"
