"""The prompt for one turn: persona, history within a token budget, memories, untrusted chat.

The system prompt comes first and never changes within a stream, and history is append-only,
so the server reuses the cached prompt prefix turn after turn. What varies (memories, the new
chat) goes last.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

from spark_client.events import ChatMessage
from spark_client.turns.persona import Persona

# Chat text must not be able to forge template markup (<|im_end|>, [INST], </chat>...).
_MARKUP = re.compile(r"<\|?/?|\|>|\[/?INST\]|</?s>", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    """A cautious estimate (English BPE averages ~4 characters per token)."""
    return math.ceil(len(text) / 3.2) + 4


def neutralise(text: str) -> str:
    return _MARKUP.sub(
        lambda m: m.group(0).replace("<", "‹").replace(">", "›").replace("|", "¦").replace("[", "(").replace("]", ")"),
        text,
    )


def chat_block(answer: ChatMessage, context: tuple[ChatMessage, ...]) -> str:
    lines = [f"{neutralise(m.user)}: {neutralise(m.text)}" for m in context]
    lines.append(f"{neutralise(answer.user)}: {neutralise(answer.text)}")
    return "<chat>\n" + "\n".join(lines) + "\n</chat>"


@dataclass(frozen=True)
class Exchange:
    chat: str  # the user-side content that was shown
    spoken: str  # what the persona actually said out loud (cut short if interrupted)
    persona: str


class ConversationHistory:
    """What was said on stream, newest last; bounded in count and, when rendered, in tokens."""

    def __init__(self, max_exchanges: int = 64) -> None:
        self._items: deque[Exchange] = deque(maxlen=max_exchanges)

    def add(self, exchange: Exchange) -> None:
        if exchange.spoken.strip():
            self._items.append(exchange)

    def __len__(self) -> int:
        return len(self._items)

    def latest(self) -> Exchange | None:
        return self._items[-1] if self._items else None

    def within(self, budget_tokens: int) -> list[Exchange]:
        chosen: list[Exchange] = []
        used = 0
        for item in reversed(self._items):
            cost = estimate_tokens(item.chat) + estimate_tokens(item.spoken)
            if used + cost > budget_tokens:
                break
            chosen.append(item)
            used += cost
        return chosen[::-1]


def build_messages(
    persona: Persona,
    history: ConversationHistory,
    *,
    chat: str,
    memories: list[str],
    budget_tokens: int = 1500,
) -> list[dict[str, str]]:
    """`chat` is the (already delimited) user turn; the history fills what the budget leaves."""
    system = persona.system_prompt
    last = chat
    if memories:
        last = (
            "Things you remember about this chat:\n" + "\n".join(f"- {neutralise(m)}" for m in memories) + "\n\n" + chat
        )
    remaining = budget_tokens - estimate_tokens(system) - estimate_tokens(last)
    messages = [{"role": "system", "content": system}]
    for item in history.within(max(0, remaining)):
        messages.append({"role": "user", "content": item.chat})
        if item.persona == persona.name:
            messages.append({"role": "assistant", "content": item.spoken})
        else:  # the other persona is another voice on stream, not this one's own words
            messages.append(
                {"role": "user", "content": f"<chat>\n{item.persona} (co-host): {neutralise(item.spoken)}\n</chat>"}
            )
    if len(messages) > 1 and messages[-1]["role"] == "user":
        last = messages.pop()["content"] + "\n" + last
    messages.append({"role": "user", "content": last})
    return messages
