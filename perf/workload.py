"""The fixed workload every measurement uses, so two reports measure the same thing.

A persona system prompt (kept identical turn after turn, as on stream, so prefix caches may
reuse it), chat questions, and texts for TTS of three lengths. Prompts are rendered by the
served `llm_template` model: the same template the client gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PERSONA = (
    "You are Spark, a cheerful, quick-witted AI VTuber who loves games, science and her chat. "
    "You are live on stream, speaking out loud. Answer in one to three short spoken sentences, "
    "no lists, no emojis, no stage directions."
)

QUESTIONS = (
    "What is your favourite video game, and why?",
    "Can you explain black holes in simple words?",
    "Do you like cats or dogs more?",
    "What should I cook for dinner tonight?",
    "How do rainbows form?",
    "Tell me a fun fact about octopuses.",
    "What music do you listen to while streaming?",
    "Is it better to play on easy or hard mode?",
    "Why is the sky blue?",
    "What would you do with a million dollars?",
    "Can you give me a tip for learning to draw?",
    "What is the best snack for a long stream?",
    "How far away is the moon?",
    "Do you believe in aliens?",
    "What makes a good co-op game?",
    "How do I stay focused when studying?",
)

CHAT_USERS = ("pixelfox", "moonbeam", "tanuki42", "orbit", "ferrite", "lumen")

TTS_TEXTS = {
    "short": "Hello chat, welcome back!",
    "medium": "Hello chat, welcome back to the stream! Today we are going to build a tiny robot "
    "out of spare parts and see if it can walk.",
    "long": "Hello chat, welcome back to the stream! Today we are going to build a tiny robot out "
    "of spare parts and see if it can walk. Last time it fell over twice, so I added a "
    "wider base and softer feet. If it works, we will race it against the cat. If it does "
    "not, well, we will learn something, and that is the whole point of science. Let me "
    "know in chat what we should name it, and remember to stay hydrated while we work.",
}

# A text long enough for 15 s of speech, cut to 2, 5 and 15 s utterances for the STT measurement.
STT_SOURCE_TEXT = (
    "The quick brown fox jumps over the lazy dog near the river bank. A gentle breeze moves the "
    "tall grass while children play football in the park. In the evening the sky turns orange, "
    "and the first stars appear above the quiet hills. Tomorrow we will walk to the old lighthouse "
    "and watch the ships sail into the harbour before the storm arrives."
)
STT_SECONDS = (2.0, 5.0, 15.0)


def chat_messages(question: str, user: str = "pixelfox") -> list[dict[str, str]]:
    return [{"role": "system", "content": PERSONA}, {"role": "user", "content": f"{user}: {question}"}]


def cold_messages(question: str, nonce: int) -> list[dict[str, str]]:
    """A system prompt that differs from the first token on, so no cached prefix can be reused."""
    return [{"role": "system", "content": f"Session {nonce:05d}. {PERSONA}"}, {"role": "user", "content": question}]


@dataclass(frozen=True)
class ChatTurn:
    user: str
    text: str
    delay_s: float
    wait_for_idle: bool = True  # sent once the persona has finished speaking: no turn queues behind another

    def to_json(self) -> str:
        return json.dumps(
            {"user": self.user, "text": self.text, "delay_s": self.delay_s, "wait_for_idle": self.wait_for_idle}
        )


def chat_script(turns: int, delay_s: float, persona_name: str = "Spark") -> list[ChatTurn]:
    """Chat lines addressed to the persona, cycling through the questions and users."""
    return [
        ChatTurn(
            user=CHAT_USERS[i % len(CHAT_USERS)],
            text=f"@{persona_name} {QUESTIONS[i % len(QUESTIONS)]}",
            delay_s=delay_s,
        )
        for i in range(turns)
    ]


def write_chat_script(path: Path, turns: list[ChatTurn]) -> Path:
    path.write_text("".join(turn.to_json() + "\n" for turn in turns), encoding="utf-8")
    return path
