"""Emotion tags in LLM output: `[happy]`, `[Sad]`, `[ surprised ]` ...

Tags are removed from the spoken/displayed text and reported with their positions, so the
avatar can change expression at the right moment. Only known emotion names count as tags;
any other bracketed text (`[1]`, `[citation needed]`) is left in the text untouched.

`EmotionTagParser` works on streaming deltas: a tag may arrive split across deltas
(`"[hap"`, `"py] hi"`), so an unfinished `[...` is held back until it closes, grows past
`max_tag_len`, or meets a character no tag contains (newline, another `[`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_EMOTIONS: frozenset[str] = frozenset(
    {
        "neutral",
        "happy",
        "sad",
        "angry",
        "surprised",
        "excited",
        "embarrassed",
        "confused",
        "thinking",
    }
)


@dataclass(frozen=True, slots=True)
class EmotionTag:
    name: str  # normalised: lower case, inner whitespace collapsed
    position: int  # offset in the cleaned text (whole stream) where the tag stood
    source_start: int  # offset of "[" in the raw text (whole stream)
    source_end: int  # offset just past "]" in the raw text


@dataclass(frozen=True, slots=True)
class ParsedText:
    text: str  # cleaned text released by this call
    tags: tuple[EmotionTag, ...]
    offset: int = 0  # cleaned-text offset at which `text` starts; tag.position - offset is local


def normalize_emotion(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


class EmotionTagParser:
    def __init__(
        self,
        *,
        emotions: Iterable[str] = DEFAULT_EMOTIONS,
        extra_emotions: Iterable[str] = (),
        max_tag_len: int = 24,
    ) -> None:
        if max_tag_len < 1:
            raise ValueError("max_tag_len must be at least 1")
        self.emotions = frozenset(normalize_emotion(e) for e in (*emotions, *extra_emotions))
        # Room for every known name plus padding spaces, so no known tag is ever cut off.
        self._max = max(max_tag_len, *(len(e) + 4 for e in self.emotions), 1)
        self._held = ""  # "[" plus what followed it, while a tag may still be forming
        self._held_start = 0
        self._src = 0  # raw characters consumed
        self._out = 0  # cleaned characters released
        self._at_space = True  # released text is empty or ends in whitespace
        self._skip_space = False  # drop one space after a removed tag that followed a space

    @property
    def held(self) -> str:
        """Text held back as a possible unfinished tag."""
        return self._held

    def feed(self, delta: str) -> ParsedText:
        start = self._out
        out: list[str] = []
        tags: list[EmotionTag] = []
        i, n = 0, len(delta)
        while i < n:
            if not self._held:
                j = delta.find("[", i)
                if j < 0:
                    self._release(delta[i:], out)
                    self._src += n - i
                    break
                self._release(delta[i:j], out)
                self._src += j - i
                self._held, self._held_start = "[", self._src
                self._src += 1
                i = j + 1
                continue
            ch = delta[i]
            if ch == "]":
                self._held += ch
                self._src += 1
                i += 1
                self._close(out, tags)
            elif ch in "[\n\r" or len(self._held) > self._max:
                held, self._held = self._held, ""
                self._release(held, out)  # not a tag; `ch` is looked at again
            else:
                self._held += ch
                self._src += 1
                i += 1
        return ParsedText("".join(out), tuple(tags), start)

    def flush(self) -> ParsedText:
        """End of stream: release any held text as it was."""
        start = self._out
        out: list[str] = []
        held, self._held = self._held, ""
        self._release(held, out)
        return ParsedText("".join(out), (), start)

    def _close(self, out: list[str], tags: list[EmotionTag]) -> None:
        held, self._held = self._held, ""
        name = normalize_emotion(held[1:-1])
        if name not in self.emotions:
            self._release(held, out)
            return
        tags.append(EmotionTag(name, self._out, self._held_start, self._src))
        if self._at_space:
            self._skip_space = True

    def _release(self, text: str, out: list[str]) -> None:
        if not text:
            return
        if self._skip_space:
            self._skip_space = False
            if text[0] in " \t":
                text = text[1:]
                if not text:
                    return
        out.append(text)
        self._out += len(text)
        self._at_space = text[-1].isspace()


def parse_emotions(
    text: str,
    *,
    emotions: Iterable[str] = DEFAULT_EMOTIONS,
    extra_emotions: Iterable[str] = (),
) -> ParsedText:
    """One-shot form of `EmotionTagParser` for a complete text."""
    parser = EmotionTagParser(emotions=emotions, extra_emotions=extra_emotions)
    body = parser.feed(text)
    rest = parser.flush()
    return ParsedText(body.text + rest.text, body.tags, 0)
