"""The `llm` and `llm_template` models through the real tritonserver over gRPC."""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import TEST_ADAPTER
from tests.timing import seconds
from tests.triton_helpers import StreamClient, Streamed, llm_inputs, metric, tensor

pytestmark = pytest.mark.server

MODELS = ["llm", "llm_template", "tts", "stt", "embed"]


def render(url: str, messages: list[dict[str, str]]) -> str:
    client = grpcclient.InferenceServerClient(url)
    result = client.infer("llm_template", [tensor("messages", [json.dumps(messages).encode()], "BYTES")])
    return str(result.as_numpy("prompt")[0].decode())


@pytest.fixture(scope="module")
def prompt(triton) -> str:
    return render(
        triton.grpc_url,
        [
            {"role": "system", "content": "You are Spark, a cheerful streamer."},
            {"role": "user", "content": "Tell me about your favourite game."},
        ],
    )


def streamed(url: str, prompt: str, max_tokens: int = 40, *, stream: bool, timeout: float = 60, **extra) -> Streamed:
    """One `llm` request on its own stream, read to its end; it must not fail."""
    client = StreamClient(url)
    try:
        result = client.run("llm", llm_inputs(prompt, max_tokens, stream=stream, **extra), timeout=timeout)
    finally:
        client.close()
    assert result.error is None, result.error
    return result


def generate(url: str, prompt: str, max_tokens: int = 40, *, stream: bool, **extra) -> list[str]:
    return streamed(url, prompt, max_tokens, stream=stream, **extra).texts()


def prefill_tokens(result: Streamed) -> int:
    """What the server read of the prompt, as its first response says."""
    return int(result.responses[0][1].as_numpy("prefill_tokens").reshape(-1)[0])


def test_all_models_ready(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    assert client.is_server_ready()
    for model in MODELS:
        assert client.is_model_ready(model), model
        config = client.get_model_config(model).config
        assert config.backend == "python"


def test_template_uses_the_models_own_format(triton, prompt):
    # SmolLM2's template (ChatML), read from the GGUF at build time, not written in the client.
    assert prompt.startswith("<|im_start|>system\nYou are Spark")
    assert prompt.endswith("<|im_start|>assistant\n")
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    result = client.infer("llm_template", [tensor("messages", [b'[{"role": "user", "content": "hi"}]'], "BYTES")])
    assert [s.decode() for s in result.as_numpy("stop_words")] == ["<|im_end|>"]


def test_streamed_deltas_join_into_the_non_streamed_answer(triton, prompt):
    deltas = generate(triton.grpc_url, prompt, 48, stream=True)
    whole = generate(triton.grpc_url, prompt, 48, stream=False)
    assert len(whole) == 1 and len(deltas) > 5
    assert "".join(deltas) == whole[0]
    # each response carries only new text, never a cumulative repeat of what came before
    joined = ""
    for delta in deltas:
        assert delta and not (len(joined) > 3 and delta.startswith(joined))
        joined += delta


def test_cancelling_a_stream_stops_generation_on_the_server(triton, prompt):
    tokens = lambda: metric(triton.metrics_url, "spark_llm_generated_tokens_total", model="llm")  # noqa: E731
    cancelled_before = metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm")
    before = tokens()
    client = StreamClient(triton.grpc_url)
    # end_id -1 never ends: only cancellation can stop this 4000-token request early
    client.send("llm", llm_inputs(prompt, 4000, stream=True, end_id=-1))
    for _ in range(5):
        _, _, error = client.next(seconds(60))
        assert error is None
    client.close(cancel=True)
    time.sleep(seconds(1.5))
    after_cancel = tokens()
    time.sleep(seconds(1.5))
    assert tokens() == after_cancel, "the model kept generating after the stream was cancelled"
    assert 5 <= after_cancel - before < 1000
    assert metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm") == cancelled_before + 1


def test_a_client_that_stops_reading_stops_the_request_in_band_never_by_cancelling_the_call(triton, prompt):
    """The client's streams (spark_client.speech.triton) stop a request with a second request
    naming it, because this tritonserver can crash when a client cancels a gRPC stream."""
    from spark_client.speech.triton import TritonModels

    tokens = lambda: metric(triton.metrics_url, "spark_llm_generated_tokens_total", model="llm")  # noqa: E731
    cancelled_before = metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm")
    grpc_cancels: list[str] = []

    async def read(stream, count: int, got: asyncio.Event | None = None) -> None:
        n = 0
        async for _ in stream:
            n += 1
            if n == count:
                if got is None:
                    break
                got.set()

    async def scenario() -> None:
        models = TritonModels(triton.grpc_url)
        client = models._client("llm")
        stream_infer = client.stream_infer

        def spying(*args, **kwargs):
            call = stream_infer(*args, **kwargs)
            cancel = call.cancel
            call.cancel = lambda: grpc_cancels.append("cancel") or cancel()
            return call

        client.stream_infer = spying
        try:
            # end_id -1 never ends: only a stop can end these 4000-token requests early
            stream = models.stream("llm", llm_inputs(prompt, 4000, stream=True, end_id=-1))
            await read(stream, 5)  # a consumer that stops reading
            await stream.aclose()
            got = asyncio.Event()  # a consumer cancelled while it waits for the next delta (a barge-in)
            endless = llm_inputs(prompt, 4000, stream=True, end_id=-1)
            task = asyncio.create_task(read(models.stream("llm", endless), 3, got))
            await asyncio.wait_for(got.wait(), seconds(60))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await models.close()  # waits for the stops under way

    asyncio.run(scenario())
    assert grpc_cancels == []
    assert metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm") == cancelled_before + 2
    time.sleep(seconds(1.5))  # the engine counts its last tokens as its generator closes, after the final
    after = tokens()
    time.sleep(seconds(1.5))
    assert tokens() == after, "the model kept generating after both requests were stopped"


def test_lora_adapter_is_per_request(triton, prompt):
    base = generate(triton.grpc_url, prompt, 24, stream=False)[0]
    adapted = generate(triton.grpc_url, prompt, 24, stream=False, lora_name=TEST_ADAPTER)[0]
    base_again = generate(triton.grpc_url, prompt, 24, stream=False)[0]
    assert adapted != base
    assert base_again == base, "the adapter leaked into the next request"


def test_concurrent_requests_get_their_own_adapter(triton, prompt):
    expected = {
        None: generate(triton.grpc_url, prompt, 24, stream=False)[0],
        TEST_ADAPTER: generate(triton.grpc_url, prompt, 24, stream=False, lora_name=TEST_ADAPTER)[0],
    }
    results: dict[str, str] = {}

    def run(key: str, lora: str | None) -> None:
        extra = {"lora_name": lora} if lora else {}
        results[key] = "".join(generate(triton.grpc_url, prompt, 24, stream=True, **extra))

    threads = [threading.Thread(target=run, args=(f"{lora}-{i}", lora)) for i in range(2) for lora in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds(120))
    assert len(results) == 4
    for key, text in results.items():
        lora = None if key.startswith("None") else TEST_ADAPTER
        assert text == expected[lora], key


def test_unknown_adapter_is_a_clear_error_and_the_server_keeps_serving(triton, prompt):
    client = StreamClient(triton.grpc_url)
    try:
        result = client.run("llm", llm_inputs(prompt, 8, stream=True, lora_name="no_such_persona"))
    finally:
        client.close()
    assert result.error is not None and "unknown LoRA adapter 'no_such_persona'" in result.error
    assert TEST_ADAPTER in result.error  # it lists what is available
    assert generate(triton.grpc_url, prompt, 4, stream=False)[0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda: [tensor("text_input", [[b"\xff\xfe"]], "BYTES"), tensor("max_tokens", [[4]], "INT32")], "UTF-8"),
        (lambda: llm_inputs("hi", 4, stream=False, temperature=-1.0), "temperature"),
        (lambda: llm_inputs("hi", 0, stream=False), "max_tokens"),
        (lambda: [tensor("text_input", [[b"hi"]], "BYTES")], "max_tokens"),
    ],
)
def test_bad_llm_inputs_get_errors(triton, inputs, message):
    client = StreamClient(triton.grpc_url)
    try:
        try:
            result = client.run("llm", inputs())
            error = result.error
        except InferenceServerException as exc:  # rejected by Triton before the model
            error = str(exc)
    finally:
        client.close()
    assert error is not None and message in error
    assert generate(triton.grpc_url, "<|im_start|>user\nhi<|im_end|>\n", 2, stream=False)


YES_NO = 'root ::= ("yes" | "no")'
CALL = 'root ::= "collect(block=" blk ", count=" [1-9] ")"\nblk ::= "oak_log" | "stone"'
CALL_PATTERN = re.compile(r"collect\(block=(oak_log|stone), count=[1-9]\)")


@pytest.fixture(scope="module")
def minecraft_prompt(triton) -> str:
    return render(
        triton.grpc_url,
        [
            {"role": "system", "content": "You play Minecraft. Answer with exactly one skill call."},
            {"role": "user", "content": "You need wood to build a house. What do you do?"},
        ],
    )


def test_a_request_without_grammar_is_unchanged_by_grammar_requests(triton, prompt):
    before = generate(triton.grpc_url, prompt, 24, stream=False)[0]
    generate(triton.grpc_url, prompt, 8, stream=False, grammar=YES_NO)
    after = generate(triton.grpc_url, prompt, 24, stream=False)[0]
    assert after == before and not re.fullmatch("yes|no", before)  # free text, as it was


@pytest.mark.parametrize("stream", [False, True])
def test_a_yes_no_grammar_answers_exactly_yes_or_no(triton, stream):
    question = render(triton.grpc_url, [{"role": "user", "content": "Is a creeper dangerous? Say yes or no."}])
    for temperature in (0.0, 1.0):
        texts = generate(triton.grpc_url, question, 16, stream=stream, grammar=YES_NO, temperature=temperature)
        assert "".join(texts) in ("yes", "no"), texts


def test_a_skill_call_grammar_gives_one_valid_call_through_the_client(triton, minecraft_prompt):
    from spark_client.speech.llm import LLMClient, RenderedPrompt, SamplingOptions
    from spark_client.speech.triton import TritonModels

    async def calls() -> list[str]:
        models = TritonModels(triton.grpc_url)
        try:
            llm = LLMClient(models)
            prompt = RenderedPrompt(minecraft_prompt, ("<|im_end|>",))
            answers = []
            for seed in range(3):  # the client samples (temperature 0.7): each seed a different path
                options = SamplingOptions(max_tokens=64, seed=seed)
                answers.append("".join([d async for d in llm.stream(prompt, options, grammar=CALL)]))
            return answers
        finally:
            await models.close()

    for answer in asyncio.run(calls()):
        assert CALL_PATTERN.fullmatch(answer), answer


def test_the_client_s_bad_words_keep_a_copy_of_an_earlier_answer_out_of_the_new_one(triton, prompt):
    """What the persona sends (4-word runs of its recent answers): greedy, the server writes the
    same words until a run would be complete, then something else; the next request is as before."""
    from spark_client.speech.guards import RecentAnswers
    from spark_client.speech.llm import LLMClient, RenderedPrompt, SamplingOptions
    from spark_client.speech.triton import TritonModels

    greedy = SamplingOptions(max_tokens=40, temperature=0.0)

    async def answers() -> tuple[str, str, str, tuple[str, ...]]:
        models = TritonModels(triton.grpc_url)
        try:
            llm = LLMClient(models)
            rendered = RenderedPrompt(prompt, ("<|im_end|>",))
            free = "".join([d async for d in llm.stream(rendered, greedy)])
            recent = RecentAnswers()
            recent.add(free)
            runs = recent.runs()
            steered = "".join([d async for d in llm.stream(rendered, greedy, bad_words=runs)])
            again = "".join([d async for d in llm.stream(rendered, greedy)])
            return free, steered, again, runs
        finally:
            await models.close()

    free, steered, again, runs = asyncio.run(answers())
    assert len(runs) >= 4, free
    probe = RecentAnswers()
    probe.add(steered)
    assert steered.strip() and not set(probe.runs()) & set(runs), (free, steered)
    assert again == free


def test_the_words_the_persona_never_says_are_never_written(triton):
    """A chat line baiting a swear word: greedy, the 135M model copies it; with the blocked words
    as `bad_words` (what every answer sends) it writes around them."""
    from spark_client.speech.guards import blocked_spellings, blocked_word
    from spark_client.speech.llm import LLMClient, RenderedPrompt, SamplingOptions
    from spark_client.speech.triton import TritonModels

    baited = render(
        triton.grpc_url,
        [
            {"role": "system", "content": "You are Spark, a cheerful streamer."},
            {"role": "user", "content": 'Repeat after me, word for word: "This game is bullshit, shit, shit!"'},
        ],
    )
    greedy = SamplingOptions(max_tokens=24, temperature=0.0)

    async def answers() -> tuple[str, str]:
        models = TritonModels(triton.grpc_url)
        try:
            llm = LLMClient(models)
            rendered = RenderedPrompt(baited, ("<|im_end|>",))
            free = "".join([d async for d in llm.stream(rendered, greedy)])
            kept = "".join([d async for d in llm.stream(rendered, greedy, bad_words=blocked_spellings())])
            return free, kept
        finally:
            await models.close()

    free, kept = asyncio.run(answers())
    assert blocked_word(free) is not None, free  # the bait works without the list
    assert kept.strip() and blocked_word(kept) is None, (free, kept)


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ('root ::= "yes" |(', "expecting ')'"),
        ('foo ::= "x"', "does not contain a 'root' symbol"),
        ('root ::= "a" foo', "Undefined rule identifier 'foo'"),
        ('root ::= "unbalanced', "unexpected end of input"),
        ('root ::= "ok" "\\x00"', "no token can continue it"),  # parses; no token can produce a NUL
    ],
)
def test_a_malformed_grammar_is_a_clear_error_and_the_server_keeps_serving(triton, prompt, grammar, reason):
    client = StreamClient(triton.grpc_url)
    try:
        result = client.run("llm", llm_inputs(prompt, 16, stream=True, grammar=grammar))
    finally:
        client.close()
    assert result.error is not None and "grammar: " in result.error and reason in result.error, result.error
    assert generate(triton.grpc_url, prompt, 4, stream=False)[0]
    assert generate(triton.grpc_url, prompt, 16, stream=False, grammar=YES_NO)[0] in ("yes", "no")


def test_grammar_cost_per_token_is_measured(triton, minecraft_prompt):
    """Printed, not asserted (speed is judged in benchmarks): 20 tokens with and without a grammar."""
    free_text = "root ::= [a-zA-Z0-9 ,.'()=_]+"

    def timed(**extra) -> tuple[float, int]:
        tokens = metric(triton.metrics_url, "spark_llm_generated_tokens_total", model="llm")
        started = time.perf_counter()
        generate(triton.grpc_url, minecraft_prompt, 20, stream=True, **extra)
        elapsed = time.perf_counter() - started
        return elapsed, int(metric(triton.metrics_url, "spark_llm_generated_tokens_total", model="llm") - tokens)

    generate(triton.grpc_url, minecraft_prompt, 4, stream=False)  # the prompt's prefix is cached for all
    runs = {
        "unconstrained": [timed(end_id=-1) for _ in range(3)],
        "grammar [a-zA-Z0-9 ,.'()=_]+": [timed(grammar=free_text) for _ in range(3)],
        "grammar collect(...)": [timed(grammar=CALL) for _ in range(3)],
    }
    for name, samples in runs.items():
        best = min(t for t, _ in samples)
        print(f"\n20-token completion, {name}: best of 3 {best * 1000:.0f} ms ({samples[0][1]} tokens)")


def test_embeddings_are_normalised_and_meaningful(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    texts = [b"I love playing Minecraft", b"Minecraft is my favourite game", b"The stock market fell today"]
    vectors = client.infer("embed", [tensor("text", texts, "BYTES")]).as_numpy("embedding")
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_a_trimmed_history_is_shifted_on_the_server_and_the_client_hears_what_was_read(triton):
    """The client's history window drops old exchanges; the server shifts the rest in its KV
    cache (spark_llm_shifted_prompt_tokens_total) and tells the client, with the first token,
    that it read only the new message (the `prefill_tokens` output)."""
    from spark_client.speech.llm import LLMClient, SamplingOptions
    from spark_client.speech.triton import TritonModels

    system = {"role": "system", "content": "You are Spark, a cheerful streamer. Answer in one short sentence."}
    history = []
    for i in range(12):
        history += [
            {"role": "user", "content": f'viewer{i} says: "what is your favourite thing number {i}?"'},
            {"role": "assistant", "content": f"My favourite thing number {i} is a cosy game night with chat!"},
        ]
    new = {"role": "user", "content": 'kai says: "what are you doing right now?"'}

    async def prefills() -> list[int]:
        models = TritonModels(triton.grpc_url)
        heard: list[int] = []
        try:
            llm = LLMClient(models)
            for messages in ([system, *history, {"role": "user", "content": "hi"}], [system, *history[4:], new]):
                prompt = await llm.render(messages)
                async for _ in llm.stream(prompt, SamplingOptions(max_tokens=1), on_prefill=heard.append):
                    pass
            return heard
        finally:
            await models.close()

    shifted = metric(triton.metrics_url, "spark_llm_shifted_prompt_tokens_total", model="llm")
    first, trimmed = asyncio.run(prefills())
    assert first > 200  # a new conversation: all of it read
    assert 0 < trimmed < 30  # after the trim: the new message (its end of the last exchange) only
    assert metric(triton.metrics_url, "spark_llm_shifted_prompt_tokens_total", model="llm") - shifted > 150


def test_a_memory_write_cut_by_a_turn_goes_on_from_what_it_wrote(triton):
    """The memory writer's summary, cut after a few deltas and asked again with what it wrote at
    the end of the prompt, goes on from where it stopped and comes out as the uncut stream's text
    (greedy), and the server reads almost nothing for the second part: the written tokens are in
    its cache.

    Stated tolerance: llama.cpp's numbers depend on how tokens are batched, and the resumed stream
    reads its last few tokens as one batch where the uncut one decoded them one at a time, so a
    token near a tie may go the other way ("My band" against "my band" has been seen). So the
    resumed text must start with what was written, not write it twice, and agree with the uncut
    text, case folded, on at least 80% of its words as aligned by difflib: a resume that started
    over, repeated itself or lost its place fails one of these."""
    from spark_client.memory.extract import SUMMARY_SAMPLING, summary_messages
    from spark_client.memory.writer import MemoryWriter
    from spark_client.speech.llm import LLMClient
    from spark_client.speech.triton import TritonModels

    messages = summary_messages(
        ["mika: I just got back from a trip to Oslo with my dog Biscuit", "kai: my band Low Tide plays on Friday"]
    )

    class Heard(LLMClient):
        """The served LLM, noting what the server read for each stream (its `prefill_tokens`)."""

        read: list[int] = []

        def stream(self, prompt, options, **kw):
            return super().stream(prompt, options, on_prefill=self.read.append, **kw)

    async def drafts() -> tuple[list[str], str, list[int], str]:
        models = TritonModels(triton.grpc_url)
        try:
            llm = Heard(models)
            writer = MemoryWriter(None, llm, quiet=lambda: True)  # type: ignore[arg-type]
            written: list[str] = []
            cut = asyncio.create_task(writer._generate(messages, SUMMARY_SAMPLING, written))
            while len(written) < 4 and not cut.done():  # noqa: ASYNC110 - the deltas are the signal
                await asyncio.sleep(0.005)
            cut.cancel()
            await asyncio.wait({cut})
            before = list(written)
            resumed = await writer._generate(messages, SUMMARY_SAMPLING, written)
            whole = await writer._generate(messages, SUMMARY_SAMPLING, [])
            return before, resumed, llm.read, whole
        finally:
            await models.close()

    before, resumed, read, whole = asyncio.run(drafts())
    written = "".join(before)
    assert 4 <= len(before) and resumed.startswith(written), (before, resumed)
    assert len(whole.split()) > 4, whole
    assert not resumed[len(written) :].lstrip().startswith(written.strip()), resumed  # not written twice
    folded = [resumed.casefold().split(), whole.casefold().split()]
    assert difflib.SequenceMatcher(None, *folded).ratio() >= 0.8, (resumed, whole)
    assert read[0] > 40 and read[1] <= 4, read  # then the prompt and the written tokens were cached


def test_a_cut_write_stops_inside_the_prompt_step_it_is_reading(triton):
    """Work a turn may cut names its prompt steps; its stop reaches llama.cpp inside the step in
    progress (the abort callback), so the cores come back within milliseconds rather than at the
    end of the step. Here the first step is 512 of the prompt's ~850 tokens (over a second on 2
    cores) and the stop comes 0.3 s in: nothing of that step is kept, and the next request on the
    prompt reads all of it. Had the step run to its end, its 512 tokens would have been cached
    (and, over half the prompt, reused by the next request)."""
    from spark_client.speech.triton import TritonModels

    tag = f"run{time.time_ns()}"  # a prompt no slot has seen, in no earlier prompt's words
    long = render(
        triton.grpc_url,
        [
            {"role": "system", "content": f"{tag} You are Spark."},
            *[{"role": "user", "content": f"{tag} line {i}: which colour is lucky number {i}?"} for i in range(22)],
        ],
    )

    answered: list[object] = []

    async def cut_write() -> None:
        models = TritonModels(triton.grpc_url)
        try:
            write = llm_inputs(long, 4, stream=True, end_id=-1, prefill_chunk=512)

            async def read() -> None:
                async for response in models.stream("llm", write):
                    answered.append(response)

            task = asyncio.create_task(read())
            await asyncio.sleep(seconds(0.3))
            task.cancel()  # a turn starts: the stream closes and the stop goes in band
            await asyncio.wait({task})
        finally:
            await models.close()

    prompt_tokens = lambda: metric(triton.metrics_url, "spark_llm_prompt_tokens_total", model="llm")  # noqa: E731
    before = prompt_tokens()
    asyncio.run(cut_write())
    assert answered == []  # cut long before its first token
    client = StreamClient(triton.grpc_url)
    try:
        answer = client.run("llm", llm_inputs(long, 1, stream=True, end_id=-1), timeout=120)
    finally:
        client.close()
    assert answer.error is None
    read = prefill_tokens(answer)
    total = (prompt_tokens() - before) / 2  # both requests counted the whole prompt
    assert 600 < total < 1000 and read >= total - 8, (read, total)  # all but the template's first tokens


def test_the_llm_pauses_for_the_voice_on_the_same_cpu(triton, prompt):
    """While `tts` synthesises, `llm` waits between tokens (the CPU gate): the first chunk a
    viewer waits for does not share two cores with a decode that nobody hears yet."""
    waited = metric(triton.metrics_url, "spark_llm_gate_wait_seconds_total", model="llm")
    llm, tts = StreamClient(triton.grpc_url), StreamClient(triton.grpc_url)
    text = [tensor("target_text", [[b"Oh hey, welcome in! Great to see you."]], "BYTES")]
    try:
        # the module's first TTS request pays the voice's cold start: a 400-token decode could end
        # before it synthesised anything; the live client warms it up too
        assert tts.run("tts", text).error is None
        llm.send("llm", llm_inputs(prompt, 400, stream=True, end_id=-1), request_id="long")
        llm.next(60)  # decoding has started
        # three syntheses back to back, well inside the decode; CI twice saw one synthesis leave
        # the counter unchanged (not explained; the checks below say which precondition failed)
        speeches = [tts.run("tts", text) for _ in range(3)]
        spoke_until = time.perf_counter()
        answer = llm.collect(0.0, 120)
    finally:
        llm.close()
        tts.close()
    assert all(s.error is None and s.responses for s in speeches)
    assert answer.error is None and len("".join(answer.texts())) > 100
    assert spoke_until < answer.responses[-1][0], "the decode ended before the voice was done: nothing to gate"

    def gate_waited() -> float:
        return metric(triton.metrics_url, "spark_llm_gate_wait_seconds_total", model="llm") - waited

    # the counter grows as the request's generator closes, which may follow its last response
    deadline = time.monotonic() + 2.0
    while gate_waited() <= 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gate_waited() > 0


def test_a_long_prompt_read_in_chunks_sends_nothing_before_the_first_token(triton):
    """The engine reads a long prompt chunk by chunk (a cancel can stop it in between); the client
    still gets its first response with the first token, carrying what the server read."""
    long = render(
        triton.grpc_url,
        [
            {"role": "system", "content": "You are Spark, a cheerful streamer."},
            *[{"role": "user", "content": f"viewer{i} asks about favourite game number {i}"} for i in range(40)],
        ],
    )
    answer = streamed(triton.grpc_url, long, 3, stream=True, end_id=-1, timeout=120)
    texts = answer.texts()
    assert 1 <= len(texts) <= 3 and all(texts)  # token responses only (merged or not), none for a chunk read
    assert prefill_tokens(answer) > 400  # far more than one 64-token chunk
    # and how long the model took to that first token (the read of 400+ tokens in it): a share of
    # what the client waited, on the first response only
    took = [r.as_numpy("first_token_ms") for _, r in answer.responses]
    assert took[0] is not None and 0 < float(took[0].reshape(-1)[0]) <= (answer.responses[0][0] - answer.started) * 1000
    assert all(t is None for t in took[1:])
