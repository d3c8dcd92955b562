"""`bad_words` with TensorRT-LLM's meaning: the masks on token ids, and the llama.cpp engine
in-process on the packaged SmolLM2 GGUF writing around them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spark_runtime.engines.bad_words import BadWords, spellings
from spark_runtime.engines.base import GenerationRequest, GenerationStats

PROMPT = "<|im_start|>user\nTell me about cats in two sentences.<|im_end|>\n<|im_start|>assistant\n"


def test_the_last_token_of_a_bad_word_is_masked_once_the_rest_was_written():
    bad = BadWords([[5, 6, 7], [9], [5, 8]])
    assert bad.banned([]) == {9}  # a one-token bad word is never sampled
    assert bad.banned([1, 5]) == {9, 8}  # "5 8" would be complete after a 5
    assert bad.banned([5, 6]) == {9, 7}
    assert bad.banned([6, 5, 6]) == {9, 7}
    assert bad.banned([5, 6, 7]) == {9}  # nothing pending after the whole word
    assert not BadWords([]) and BadWords([[1]])


def test_each_string_is_matched_as_written_and_after_a_space():
    assert spellings(["not sure what", " a cat", "", "  "]) == ["not sure what", " not sure what", " a cat"]
    seen: list[str] = []
    BadWords.of(["a b"], lambda s: seen.append(s) or [len(s)])
    assert seen == ["a b", " a b"]


@pytest.fixture(scope="module")
def engine(engine_dir: Path):
    from spark_runtime.engines import load_engine

    e = load_engine(engine_dir / "llm", slots=2, threads=2)
    yield e
    e.close()


def run(engine, **kw) -> str:
    return "".join(engine.generate(GenerationRequest(prompt=PROMPT, max_tokens=40, **kw), GenerationStats()))


def runs_of(text: str, n: int) -> list[str]:
    spans = [m.span() for m in re.finditer(r"[\w']+", text)]
    return [text[spans[i][0] : spans[i + n - 1][1]] for i in range(len(spans) - n + 1)]


def test_the_engine_writes_the_same_until_a_bad_word_would_be_complete(engine):
    free = run(engine)  # greedy
    runs = runs_of(free, 4)
    assert len(runs) >= 4
    banned = runs[2]  # the third 4-word run: the answer must leave it at its last word
    steered = run(engine, bad_words=(banned,))
    assert banned not in steered
    kept = free[: free.index(banned)] + banned.rsplit(" ", 1)[0]
    assert steered.startswith(kept)  # word for word the same up to there
    # every 4-word run banned: no run of the free answer survives
    fresh = run(engine, bad_words=tuple(runs))
    assert fresh.strip() and not set(runs_of(fresh, 4)) & set(runs)
    assert run(engine) == free  # nothing stays behind for the next request
