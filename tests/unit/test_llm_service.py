"""What every `llm` stream tells the client besides its text (LLMService with a stand-in engine
and the stub pb_utils): how many prompt tokens the engine had to read and how long the model took
to its first token, also when the model ends the answer before its first token."""

from __future__ import annotations

import time

import numpy as np

from spark_runtime.llm_service import LLMService, ends_at_boundary
from spark_runtime.paths import ENGINE_DIR_ENV
from tests.fakes import pb_utils
from tests.timing import seconds
from tests.unit.test_engine_concurrency import llm_request, service_args


class ReadingEngine:
    """Reads `read` prompt tokens, then says `tokens` (none: the model's end came first)."""

    concurrent_streams = 1

    def __init__(self, read: int, tokens: list[str], reading_s: float = 0.0) -> None:
        self.read, self.tokens, self.reading_s = read, tokens, reading_s

    def generate(self, request, stats=None, cancelled=None):
        stats.prompt_tokens = self.read
        time.sleep(self.reading_s)  # the prompt read
        for token in self.tokens:
            stats.generated_tokens += 1
            yield token

    def close(self) -> None:
        pass


def served(engine: ReadingEngine, monkeypatch, *, stream: bool = True) -> pb_utils.ResponseSender:
    monkeypatch.setattr("spark_runtime.llm_service.load_engine", lambda *a, **kw: engine)
    monkeypatch.setenv(ENGINE_DIR_ENV, "/nonexistent")
    service = LLMService(pb_utils, service_args({}))
    try:
        request = (
            llm_request(1)
            if stream
            else pb_utils.InferenceRequest(
                text_input=np.array([[b"Hello"]], dtype=object),
                max_tokens=np.array([[8]], dtype=np.int32),
                stream=np.array([[False]]),
            )
        )
        service.runner.submit(request)
        assert request.sender.done.wait(seconds(10))
        assert request.sender.errors() == []
        return request.sender
    finally:
        service.close()


def counts(sender: pb_utils.ResponseSender) -> list[int]:
    return [int(a.reshape(-1)[0]) for a in sender.outputs("prefill_tokens")]


def first_token_ms(sender: pb_utils.ResponseSender) -> list[float]:
    return [float(a.reshape(-1)[0]) for a in sender.outputs("first_token_ms")]


def test_the_first_token_carries_what_the_engine_read(monkeypatch):
    sender = served(ReadingEngine(17, ["Hi", " there"]), monkeypatch)
    assert counts(sender) == [17]
    assert "".join(a.reshape(-1)[0].decode() for a in sender.outputs("text_output")) == "Hi there"


def test_the_first_token_says_how_long_the_model_took_to_it(monkeypatch):
    """The server's own share of a turn's first token: a prompt read of 0.2 s shows in it (on the
    first response only), so a client that waited longer knows the rest was not the model's."""
    sender = served(ReadingEngine(17, ["Hi", " there", "!"], reading_s=0.2), monkeypatch)
    (took,) = first_token_ms(sender)
    assert took >= 200.0
    ended = served(ReadingEngine(23, [], reading_s=0.05), monkeypatch)  # the model's end came first
    assert len(first_token_ms(ended)) == 1 and first_token_ms(ended)[0] >= 50.0


def test_a_whole_answer_in_one_response_says_when_its_first_token_came_not_its_last(monkeypatch):
    class Slow(ReadingEngine):
        def generate(self, request, stats=None, cancelled=None):
            for token in super().generate(request, stats, cancelled):
                yield token
                time.sleep(1.0)  # the step after it

    sender = served(Slow(5, ["One", " two"], reading_s=0.05), monkeypatch, stream=False)
    (took,) = first_token_ms(sender)
    assert 50.0 <= took < 1000.0  # the read, not the 2 s the whole answer took
    assert counts(sender) == [5]


def test_a_stream_that_ends_before_its_first_token_still_says_what_was_read(monkeypatch):
    """A read-ahead of the chat (one token asked, the model's end of turn came first) is how a
    turn learns what its prompt cost: without this response the count was lost."""
    sender = served(ReadingEngine(23, []), monkeypatch)
    assert counts(sender) == [23]
    assert [a.reshape(-1)[0] for a in sender.outputs("text_output")] == [b""]


def test_a_delta_ends_at_a_boundary_where_a_reader_may_cut_a_piece_after_it():
    def delta(text: str) -> dict:
        return {"text_output": np.array([[text.encode()]], dtype=object)}

    assert all(ends_at_boundary(delta(t)) for t in ("Hi,", " there.", ' wow!"', " (yes)?", " so:", "…", " end.\n"))
    assert not any(ends_at_boundary(delta(t)) for t in ("", " word", " [happy]", " 3", '"', " é"))
    assert not ends_at_boundary({"prefill_tokens": np.array([[3]], dtype=np.int32)})
