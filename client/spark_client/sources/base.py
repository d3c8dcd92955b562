"""The contract between a chat source and the turn loop."""

from __future__ import annotations

from typing import Protocol

from spark_client.events import ChatEvent


class ChatSink(Protocol):
    """Receives events from sources. `offer` never blocks: a full sink samples and counts."""

    def offer(self, event: ChatEvent) -> bool:
        """Hand over one event; returns False when it was dropped by backpressure."""
        ...


class ChatSource(Protocol):
    name: str

    async def run(self, sink: ChatSink) -> None:
        """Produce events until cancelled (or, for finite sources, until exhausted)."""
        ...


class ChatReplier(Protocol):
    """A source that can also post text back to its chat (Twitch with a bot token)."""

    async def reply(self, text: str, *, parent_message_id: str = "") -> None: ...
