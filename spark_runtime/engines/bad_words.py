"""`bad_words`: token sequences an answer must not contain, with TensorRT-LLM's meaning.

A bad word is a string; its tokens may not appear in the output in that order: when the output
ends with all of a bad word's tokens but its last, that last token is masked for the next step
(a one-token bad word is never sampled). Nothing else is touched, so the model writes the same
text as without the list until the point where it would have completed a bad word, and there
takes its next best token.

A word after another word is spelled with a leading space in BPE and SentencePiece vocabularies,
so each string is matched as written and after a space ("not sure what" and " not sure what").
Engines that sample themselves (llama.cpp, transformers) use `BadWords`; TensorRT-LLM takes
the same strings as `SamplingParams(bad=...)` (`spellings`).

What the persona sends is the 4-word runs of its own recent answers and their 2-word openings
(`spark_client/speech/guards.py`, `RecentAnswers.runs`): a small model that sees its earlier
answers in the prompt copies them word for word, and the output guard then has to drop the
repeat and ask again; with the runs banned it cannot copy more than three words in a row. It
also sends the words it never says on stream (`blocked_spellings`: strong profanity, slurs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


def spellings(words: Iterable[str]) -> list[str]:
    """Each bad word as written and after a space, in order, without duplicates."""
    out: dict[str, None] = {}
    for word in words:
        if word.strip():
            out[word] = None
            out[" " + word.lstrip(" ")] = None
    return list(out)


class BadWords:
    """The masks a set of token sequences puts on the next token, given the output so far."""

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        self.always: set[int] = set()  # one-token bad words
        # prefix length -> prefix -> the tokens that would complete a bad word after it
        self.after: dict[int, dict[tuple[int, ...], set[int]]] = {}
        for sequence in sequences:
            tokens = tuple(int(t) for t in sequence)
            if len(tokens) == 1:
                self.always.add(tokens[0])
            elif tokens:
                self.after.setdefault(len(tokens) - 1, {}).setdefault(tokens[:-1], set()).add(tokens[-1])

    @classmethod
    def of(cls, words: Iterable[str], tokenize: Callable[[str], Sequence[int]]) -> BadWords:
        return cls(tokenize(spelling) for spelling in spellings(words))

    def __bool__(self) -> bool:
        return bool(self.always or self.after)

    def banned(self, output: Sequence[int]) -> set[int]:
        """The tokens that would complete a bad word if sampled after `output`."""
        banned = set(self.always)
        n = len(output)
        for length, prefixes in self.after.items():
            if length <= n and (tokens := prefixes.get(tuple(int(t) for t in output[n - length :]))):
                banned |= tokens
        return banned
