"""Facts and summaries written by the served LLM, and the checks they must pass to be kept.

A small model invents, so nothing it writes is trusted as it is: a fact must name the viewer, be
short, and be made of the viewer's own words (a fact the viewer never said is dropped); a summary
must be short, plain text. What fails the checks is not stored (a summary falls back to an
extractive one built from the viewers' own lines).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from spark_client.speech.llm import SamplingOptions

FACT_SAMPLING = SamplingOptions(max_tokens=40, temperature=0.0, repetition_penalty=1.1)
SUMMARY_SAMPLING = SamplingOptions(max_tokens=60, temperature=0.0, repetition_penalty=1.2)

FACT_SYSTEM = (
    "You keep notes about viewers of a live stream. From what a viewer says, write the lasting facts "
    "about that viewer (hobbies, pets, food, work, places, names), one per line, each starting with "
    "the viewer's name. If there is nothing lasting, write NONE."
)
FACT_EXAMPLES = (
    ("pixelhound", "I play bass in a band called Low Tide!", "pixelhound plays bass in a band called Low Tide"),
    ("rin_7", "hi hi, how are you today?", "NONE"),
    ("oak_tree", "my cat is named Miso and I live in Oslo", "oak_tree has a cat named Miso\noak_tree lives in Oslo"),
)
SUMMARY_SYSTEM = (
    "You write the stream's notes. Summarise what happened in this part of the stream in one or two "
    "short sentences: who was there and what they talked about."
)

_MARKUP = re.compile(r"[<>{}\[\]`|]|https?://", re.IGNORECASE)
_WORD = re.compile(r"[\w']+")
# words a fact may add to the viewer's own ("I play" -> "pixelhound plays"): grammar, not content
_GLUE = frozenset(
    "a an the is are was were be has have had does do did and or of in on at to for with from by as "
    "their they them his her he she its it who that which s".split()
)
_PRONOUNS = {"i": "", "my": "", "me": "", "mine": "", "i'm": "", "im": "", "i've": "", "ive": ""}


def fact_messages(user: str, text: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": FACT_SYSTEM}]
    for example_user, said, facts in FACT_EXAMPLES:
        messages.append({"role": "user", "content": f'{example_user} says: "{said}"'})
        messages.append({"role": "assistant", "content": facts})
    messages.append({"role": "user", "content": f'{user} says: "{_quote(text)}"'})
    return messages


def summary_messages(lines: Sequence[str]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": "\n".join(_quote(line) for line in lines)},
    ]


def _quote(text: str) -> str:
    return " ".join(text.replace('"', "'").split())


def _stem(word: str) -> str:
    word = word.casefold().strip("'")
    for suffix in ("ing", "es", "s", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def grounded_facts(output: str, user: str, said: str, *, max_facts: int = 3) -> list[str]:
    """The facts in the model's `output` that pass the checks, at most `max_facts`."""
    own = {_stem(w) for w in _WORD.findall(said)}
    name = user.casefold()
    kept: list[str] = []
    for raw in output.splitlines():
        fact = " ".join(raw.strip().lstrip("-*• ").split()).rstrip(".")
        if not fact or fact.upper().startswith("NONE") or _MARKUP.search(fact):
            continue
        words = _WORD.findall(fact)
        if not words or words[0].casefold().removesuffix("'s") != name or not 3 <= len(words) <= 25:
            continue
        content = [w for w in words[1:] if w.casefold() not in _GLUE and w.casefold() not in _PRONOUNS]
        if not content or any(_stem(w) not in own for w in content):
            continue  # the viewer never said it
        if fact not in kept:
            kept.append(fact)
        if len(kept) == max_facts:
            break
    return kept


@dataclass(frozen=True, slots=True)
class ExchangeLine:
    user: str
    said: str
    user_id: str = ""
    message_id: str = ""


_LABEL = re.compile(r"(?:^|\s)[\w']+:\s")  # "name: ..." (a transcript copied, often misattributed)
_SUMMARY_GLUE = _GLUE | frozenset(
    "about talked talk said say chat chatted viewers viewer stream streamer also everyone asked told "
    "shared while then who what their there this".split()
)


def checked_summary(output: str, lines: Sequence[ExchangeLine]) -> str:
    """The model's summary if it is short prose about these viewers in their own words (no
    transcript lines, no word nobody said); otherwise an extractive summary made of who talked
    and the start of what each said."""
    text = " ".join(output.split())
    words = _WORD.findall(text)
    names = {line.user.casefold() for line in lines}
    own = {_stem(w) for line in lines for w in (*_WORD.findall(line.said), line.user)}
    grounded = all(_stem(w) in own for w in words if w.casefold() not in _SUMMARY_GLUE)
    if (
        5 <= len(words) <= 40
        and grounded
        and not _MARKUP.search(text)
        and not _LABEL.search(text)
        and any(n in text.casefold() for n in names)
    ):
        return text
    return extractive_summary(lines)


def extractive_summary(lines: Sequence[ExchangeLine], *, words_each: int = 10, most: int = 4) -> str:
    parts: list[str] = []
    seen: set[str] = set()
    for line in lines:
        key = line.user.casefold()
        if key in seen:
            continue
        seen.add(key)
        said = line.said.split()
        parts.append(f'{line.user} said "{" ".join(said[:words_each])}{" ..." if len(said) > words_each else ""}"')
        if len(parts) == most:
            break
    more = len({line.user.casefold() for line in lines}) - len(parts)
    tail = f", and {more} more viewer(s) talked" if more > 0 else ""
    return "On stream: " + "; ".join(parts) + tail + "." if parts else ""
