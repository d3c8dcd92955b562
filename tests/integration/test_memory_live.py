"""Long-term memory through `spark-client live` and the real tritonserver: three viewers tell the
persona something about themselves, twenty other viewers talk long enough for the conversation
history to drop those exchanges, then the three ask about it. What the LLM was sent for each
question must hold the viewer's fact (the turn's `memories`); what the small model chooses to say
is not judged here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from spark_client.events import ChatMessage
from spark_client.memory import Memory
from spark_client.memory.recall import Recalled
from spark_client.memory.service import Embedder
from spark_client.speech.triton import TritonModels

from tests.fakes.personas import write_personas
from tests.integration.test_shutdown import memories as stored
from tests.timing import seconds

pytestmark = [pytest.mark.server, pytest.mark.e2e]

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")

# Short answers keep the run short; the viewers' long lines fill the history window.
PERSONAS = [
    {
        "name": "Spark",
        "description": "A cheerful AI streamer.",
        "max_sentences": 1,
        "sampling": {"max_tokens": 16, "temperature": 0.0},
    }
]
FACTS = {
    "pixelhound": ("I play bass in a band called Low Tide.", "Do you remember what band I play bass in?", "Low Tide"),
    "rin_7": ("My favourite food is ramen, I eat it every day.", "What is my favourite food again?", "ramen"),
    "mossy_oak": ("My cat is named Miso and she is very fluffy.", "Can you remember my cat's name?", "Miso"),
}
# Twenty viewers on twenty topics, each line long enough that the history window fills and drops
# the first exchanges (a varied chat also keeps the answers from repeating each other).
TOPICS = (
    "the speedrun I watched last night where the runner skipped the whole water temple with one jump",
    "my grandmother's garden, which has tomatoes, beans, sunflowers and a very angry goose",
    "the thunderstorm outside right now, the lights flickered twice and the dog is hiding",
    "a board game night with friends where nobody understood the rules of the trading phase",
    "learning to juggle three balls, I can do about twenty catches before everything falls",
    "the new bakery on my street that sells cinnamon rolls as big as a dinner plate",
    "a train trip along the coast where the sea was bright green and the seats were awful",
    "building a tiny robot that follows a black line on the floor and sometimes eats socks",
    "the mystery novel I am reading where the detective is secretly a retired circus clown",
    "my attempt at making sourdough bread which came out flat, sour and strangely purple",
    "the marathon in our city where a runner in a banana costume finished before the pros",
    "an old arcade machine in the mall that still has a high score from nineteen ninety two",
    "painting my room dark blue and discovering that one wall needs four more coats",
    "the snowboard lesson where I spent more time sitting in the snow than standing up",
    "a documentary about octopuses that open jars, escape tanks and recognise faces",
    "my neighbour's parrot who learned to copy the microwave beep and the doorbell",
    "the camping weekend where it rained every hour and the tent turned into a pool",
    "a chess tournament at school where the final lasted three hours and ended in a draw",
    "fixing an old bicycle with new brakes, a new chain and a bell that sounds like a duck",
    "the concert in the park where the singer forgot the words and the crowd sang instead",
)


def script_lines() -> list[dict]:
    lines = [
        {"user": user, "text": said, "delay_s": 0.1, "wait_for_idle": True} for user, (said, _, _) in FACTS.items()
    ]
    lines += [
        {
            "user": f"viewer{n:02d}",
            "text": f"Let me tell you all about {topic}, it was quite something and I keep "
            "thinking about it, what do you think about that?",
            "delay_s": 0.1,
            "wait_for_idle": True,
        }
        for n, topic in enumerate(TOPICS)
    ]
    lines += [{"user": user, "text": ask, "delay_s": 0.1, "wait_for_idle": True} for user, (_, ask, _) in FACTS.items()]
    return lines


def test_viewers_facts_reach_the_prompt_after_the_history_has_dropped_them(triton, tmp_path: Path):
    script = tmp_path / "chat.jsonl"
    script.write_text("\n".join(json.dumps(line) for line in script_lines()) + "\n")
    personas = write_personas(tmp_path / "personas", PERSONAS)
    turns_file = tmp_path / "turns.jsonl"
    command = [
        str(SPARK_CLIENT),
        "live",
        "--script",
        str(script),
        "--personas",
        str(personas),
        "--duo-state",
        str(tmp_path / "duo.json"),
        "--triton-url",
        triton.grpc_url,
        "--no-playback",
        "--no-vts",
        "--wav",
        str(tmp_path / "session.wav"),
        "--metrics-jsonl",
        str(turns_file),
        "--memory-dir",
        str(tmp_path / "memory"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds(600))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    turns = [json.loads(line) for line in turns_file.read_text().splitlines() if line.strip()]
    assert len(turns) == len(script_lines()), output

    # every 8 heard exchanges were summed up in quiet time, and the end of the stream too
    heard = sum(1 for t in turns if t["spoken"] and not t["interrupted"])
    assert stored(tmp_path / "memory", "summary") == heard // 8 + (heard % 8 > 0), output
    for record in turns:
        assert record["memory_tokens"] <= 60 and record["recall_ms"] is not None, record
    asked = {t["user"]: t for t in turns[-len(FACTS) :]}
    for user, (_, _, keyword) in FACTS.items():
        memories = asked[user]["memories"]
        # the viewer's own line comes back (first: the viewer's memories lead the block) ...
        assert memories and keyword in memories[0] and memories[0].startswith(f"{user} said:"), (user, memories)
        # ... and it came from memory, not from the history window: a memory the window still
        # shows is left out of the block, so this exchange had been dropped from the history


async def recall_once(url: str, folder: Path, message: ChatMessage) -> tuple[str, ...]:
    """The memory block's lines for `message` from the store in `folder`."""
    models = TritonModels(url)
    memory = Memory.open(Embedder(models), path=folder / "memory")
    try:
        return (await memory.recall(message)).lines
    finally:
        memory.close()
        await models.close()


def test_recall_with_the_served_embedding_model_brings_back_what_is_about_the_message(triton, tmp_path: Path):
    """The recall distances are tuned to the served MiniLM: a returning viewer's greeting brings
    back what they told about themselves, a related question brings back an earlier exchange
    (whoever had it), and an unrelated one brings back nothing, although every line opens with
    "@Spark" (which made unrelated questions look alike)."""

    def line(user: str, text: str) -> ChatMessage:
        return ChatMessage(source="twitch", user=user, text=text)

    async def scenario() -> dict[str, Recalled]:
        models = TritonModels(triton.grpc_url)
        memory = Memory.open(Embedder(models), path=tmp_path / "memory")
        try:
            bass = line("pixelhound", "@Spark I play bass in a band called Low Tide.")
            await memory.remember(bass, "Wow, a bass player in a band! Stay sparky!", "Spark")
            await memory.remember_fact(bass, "pixelhound plays bass in a band called Low Tide", "Spark")
            dinner = line("orbit", "@Spark What should I cook for dinner tonight?")
            await memory.remember(dinner, "Pasta with lots of cheese! Stay sparky!", "Spark")
            sky = line("tanuki", "@Spark Why is the sky blue?")
            await memory.remember(sky, "Sunlight scatters in the air! Stay sparky!", "Spark")
            asked = {
                "back": line("pixelhound", "hi Spark, I'm back!"),
                "lunch": line("orbit", "@Spark What should I cook for lunch tomorrow?"),
                "sky": line("ferrite", "@Spark Why is the sky blue in the daytime?"),
                "bass": line("mika", "@Spark does anyone here play bass?"),
                "focus": line("orbit", "@Spark How do I stay focused when studying?"),
                "million": line("orbit", "@Spark What would you do with a million dollars?"),
                "pets": line("pixelhound", "@Spark Do you like cats or dogs more?"),
            }
            return {key: await memory.recall(message) for key, message in asked.items()}
        finally:
            memory.close()
            await models.close()

    recalled = asyncio.run(scenario())
    lines = {key: r.lines for key, r in recalled.items()}
    assert "pixelhound plays bass in a band called Low Tide" in lines["back"], lines
    assert lines["lunch"][:1] == (
        "orbit said: What should I cook for dinner tonight? / Spark answered: Pasta with lots of cheese! Stay sparky!",
    ), lines
    # another viewer's exchange whose question the message asks again (every word of it): who
    # asked and the answer, since the chat line shows the question already
    assert "tanuki asked the same; Spark answered: Sunlight scatters in the air! Stay sparky!" in lines["sky"], lines
    dusk = asyncio.run(recall_once(triton.grpc_url, tmp_path, line("ferrite", "@Spark why is the sky red at dusk?")))
    assert [m for m in dusk if m.startswith("tanuki said: Why is the sky blue? / Spark answered:")], dusk
    assert "pixelhound plays bass in a band called Low Tide" in lines["bass"], lines
    # nothing about these was said before: no transcript (and no other viewer's memory) is read
    assert lines["focus"] == lines["million"] == (), lines
    assert not [m for m in lines["pets"] if "said:" in m], lines
