"""The TensorRT-LLM engine's glue, against a scripted stand-in for the tensorrt_llm package (no GPU
here) written from the LLM API's documented signatures (TensorRT-LLM 1.2, PyTorch backend): what
it asks `tensorrt_llm.LLM` for, and how it turns streamed outputs into deltas."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from build_engines.gb10_outputs import llm_engine_json
from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import RequestError


class Recorded:
    """Stands in for the LLM API's config classes: keeps its keyword arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class Output:
    outputs: list[Completion]
    finished: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3])


class ScriptedResult:
    """Yields the cumulative text after each decoding step, as the LLM API's outputs carry it."""

    def __init__(self, texts: list[str], finish: str = "length") -> None:
        self.texts, self.finish, self.aborted, self.steps = texts, finish, False, 0

    def __iter__(self):
        for i, text in enumerate(self.texts):
            if self.aborted:
                return
            self.steps += 1
            last = i == len(self.texts) - 1
            yield Output([Completion(text, list(range(i + 1)), self.finish if last else None)], last)

    def abort(self) -> None:
        self.aborted = True


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []
    script: ClassVar[list[str]] = ["Hel", "Hello", "Hello wor", "Hello world", "Hello world!"]

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs, self.calls, self.closed = kwargs, [], False
        FakeLLM.instances.append(self)

    def generate_async(self, prompt: str, **kwargs: Any) -> ScriptedResult:
        self.calls.append({"prompt": prompt, **kwargs})
        self.result = ScriptedResult(list(self.script))
        return self.result

    def shutdown(self) -> None:
        self.closed = True


class FakeXGrammar:
    """xgrammar's parser as the engine uses it: raises on text that is not a grammar."""

    @staticmethod
    def from_ebnf(text: str) -> object:
        if "::=" not in text:
            raise RuntimeError("[12:00:00] grammar_parser.cc:99: EBNF parse error at line 1, column 1:\n Expect ::=")
        return object()


class FakeTokenizer:
    chat_template = "{{ bos_token }}{{ messages[0]['content'] }}"
    bos_token, eos_token = "<s>", "</s>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(range(len(text.split())))


@pytest.fixture
def fake_trtllm(monkeypatch):
    modules = {
        "tensorrt_llm": types.ModuleType("tensorrt_llm"),
        "tensorrt_llm.llmapi": types.ModuleType("tensorrt_llm.llmapi"),
        "tensorrt_llm.lora_manager": types.ModuleType("tensorrt_llm.lora_manager"),
        "xgrammar": types.ModuleType("xgrammar"),
    }
    modules["tensorrt_llm"].LLM = FakeLLM  # the public LLM: the PyTorch backend since 1.0
    modules["tensorrt_llm"].SamplingParams = Recorded
    llmapi = modules["tensorrt_llm.llmapi"]
    for name in (
        "KvCacheConfig",
        "CudaGraphConfig",
        "DraftTargetDecodingConfig",
        "LoRARequest",
        "GuidedDecodingParams",
    ):
        setattr(llmapi, name, Recorded)
    modules["tensorrt_llm.lora_manager"].LoraConfig = Recorded
    modules["xgrammar"].Grammar = FakeXGrammar
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances.clear()
    from spark_runtime.engines.trtllm import _xgrammar_error

    _xgrammar_error.cache_clear()  # its verdicts came from another test's xgrammar
    return modules


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "llm"
    for checkpoint in ("checkpoint", "draft/checkpoint"):
        (folder / checkpoint).mkdir(parents=True)
        (folder / checkpoint / "config.json").write_text("{}")
    for name in ("aria", "bo"):
        (folder / "adapters" / name).mkdir(parents=True)
        (folder / "adapters" / name / "adapter_config.json").write_text("{}")
    lora = {"max_rank": 16, "target_modules": ["attn_q", "attn_v"], "max_loras": 4, "max_cpu_loras": 8}
    manifest = llm_engine_json(
        qformat="nvfp4",
        kv_dtype="fp8",
        context=64,
        slots=2,
        kv_tokens=128,
        kv_free_fraction=0.3,
        lora=lora,
        adapters=["aria", "bo"],
        draft=None,
        source={},
    )
    (folder / "engine.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def engine(fake_trtllm, engine_dir):
    from spark_runtime.engines import load_engine

    e = load_engine(engine_dir, slots=0, threads=0, adapters_dir=None)
    e._hf_tokenizer = FakeTokenizer()
    yield e
    e.close()


def run(engine, **kw) -> tuple[list[str], GenerationStats]:
    stats = GenerationStats()
    return list(engine.generate(GenerationRequest(prompt="<s>hi there", **kw), stats)), stats


def test_importing_the_engine_module_does_not_import_tensorrt_llm():
    code = "import sys, spark_runtime.engines, spark_runtime.engines.trtllm; print('tensorrt_llm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "False"


def test_engine_json_becomes_the_llm_api_arguments(engine, engine_dir):
    (llm,) = FakeLLM.instances
    assert llm.kwargs["model"] == str(engine_dir / "checkpoint")  # a Hugging Face checkpoint, no engine
    assert llm.kwargs["tokenizer"] == str(engine_dir / "tokenizer")
    assert (llm.kwargs["backend"], llm.kwargs["max_batch_size"], llm.kwargs["max_seq_len"]) == ("pytorch", 2, 64)
    assert llm.kwargs["kv_cache_config"].kwargs == {
        "max_tokens": 128,
        "free_gpu_memory_fraction": 0.3,
        "enable_block_reuse": True,
        "dtype": "fp8",
    }
    assert llm.kwargs["cuda_graph_config"].kwargs == {"max_batch_size": 2, "enable_padding": True}
    assert llm.kwargs["guided_decoding_backend"] == "xgrammar"  # grammar requests need it at load
    lora = llm.kwargs["lora_config"].kwargs
    assert lora == {
        "lora_dir": [str(engine_dir / "adapters" / "aria"), str(engine_dir / "adapters" / "bo")],
        "lora_target_modules": ["attn_q", "attn_v"],
        "max_lora_rank": 16,
        "max_loras": 4,
        "max_cpu_loras": 8,
    }
    assert "peft_cache_config" not in llm.kwargs  # counts only: fractions would conflict with them
    assert "speculative_config" not in llm.kwargs and "disable_overlap_scheduler" not in llm.kwargs
    assert engine.concurrent_streams == 2 and engine.adapter_names() == ["aria", "bo"]
    assert engine.chat_template().startswith("{{ bos_token }}")


def test_a_draft_model_becomes_draft_target_speculative_decoding(fake_trtllm, engine_dir, caplog):
    from spark_runtime.engines import load_engine

    manifest = json.loads((engine_dir / "engine.json").read_text())
    manifest["draft"] = {"checkpoint_dir": "draft/checkpoint", "max_draft_len": 4}
    manifest["untested"] = ["draft + lora: LoRA with speculative decoding is 'Untested'"]
    (engine_dir / "engine.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        load_engine(engine_dir)
    kwargs = FakeLLM.instances[-1].kwargs
    spec = kwargs["speculative_config"]
    assert spec.kwargs == {"max_draft_len": 4, "speculative_model_dir": str(engine_dir / "draft" / "checkpoint")}
    assert kwargs["disable_overlap_scheduler"] is True
    assert "untested in this TensorRT-LLM version" in caplog.text and "draft + lora" in caplog.text


def test_engine_folders_from_another_flow_or_half_built_are_refused(fake_trtllm, engine_dir):
    from spark_runtime.engines import load_engine
    from spark_runtime.errors import EngineMissingError

    manifest = json.loads((engine_dir / "engine.json").read_text())
    (engine_dir / "engine.json").write_text(json.dumps({**manifest, "backend": "tensorrt"}))
    with pytest.raises(EngineMissingError, match="backend 'tensorrt'.*PyTorch backend: rebuild"):
        load_engine(engine_dir)
    draft = {"checkpoint_dir": "draft/missing", "max_draft_len": 4}
    (engine_dir / "engine.json").write_text(json.dumps({**manifest, "draft": draft}))
    with pytest.raises(EngineMissingError, match="no draft checkpoint in"):
        load_engine(engine_dir)
    lora = {**manifest["lora"], "max_loras": 8, "max_cpu_loras": 4}
    (engine_dir / "engine.json").write_text(json.dumps({**manifest, "lora": lora}))
    with pytest.raises(EngineMissingError, match="max_cpu_loras 4 < max_loras 8"):
        load_engine(engine_dir)
    assert not FakeLLM.instances


def test_streams_deltas_and_maps_sampling(engine):
    parts, stats = run(engine, max_tokens=10)
    assert "".join(parts) == "Hello world!" and parts[0] == "Hel"
    assert stats.generated_tokens == 5 and stats.prompt_tokens == 3 and stats.finish_reason == "length"
    call = FakeLLM.instances[0].calls[-1]
    assert call["streaming"] is True and call["lora_request"] is None
    # greedy; the rendered prompt carries its BOS, so the LLM API adds no special tokens
    assert call["sampling_params"].kwargs == {"max_tokens": 10, "seed": 0, "add_special_tokens": False, "top_k": 1}
    run(engine, max_tokens=5, temperature=0.7, top_p=0.9, top_k=40, end_id=-1, seed=3)
    assert FakeLLM.instances[0].calls[-1]["sampling_params"].kwargs == {
        "max_tokens": 5,
        "seed": 3,
        "add_special_tokens": False,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "ignore_eos": True,
    }


def test_bad_words_go_to_the_llm_api_as_written_and_after_a_space(engine):
    run(engine, max_tokens=5, bad_words=("not sure what", "a topic"))
    kwargs = FakeLLM.instances[0].calls[-1]["sampling_params"].kwargs
    assert kwargs["bad"] == ["not sure what", " not sure what", "a topic", " a topic"]


def test_a_character_split_across_tokens_is_held_back(engine):
    # the detokenizer shows a partial UTF-8 sequence as U+FFFD until the next token completes it
    FakeLLM.script = ["caf", "caf\ufffd", "café!"]
    try:
        parts, _ = run(engine)
    finally:
        FakeLLM.script = ["Hel", "Hello", "Hello wor", "Hello world", "Hello world!"]
    assert parts == ["caf", "", "é!"]


def test_stop_words_end_the_stream_and_abort_the_request(engine):
    parts, stats = run(engine, stop_words=(" wor",))
    assert "".join(parts) == "Hello" and stats.finish_reason == "stop"
    result = FakeLLM.instances[0].result
    assert result.aborted and result.steps == 3
    assert "stop" not in FakeLLM.instances[0].calls[-1]["sampling_params"].kwargs


def test_lora_by_name_and_cancellation(engine, engine_dir):
    run(engine, lora_name="bo")
    request = FakeLLM.instances[0].calls[-1]["lora_request"]
    assert request.args == ("bo", 2, str(engine_dir / "adapters" / "bo"))
    with pytest.raises(RequestError, match="unknown LoRA adapter 'carl'; available: aria, bo"):
        run(engine, lora_name="carl")
    stats = GenerationStats()
    stream = engine.generate(GenerationRequest(prompt="<s>hi", max_tokens=10), stats)
    next(stream)
    stream.close()
    assert stats.finish_reason == "cancelled" and FakeLLM.instances[0].result.aborted


def test_a_prompt_longer_than_the_engine_is_refused(engine):
    with pytest.raises(RequestError, match="the engine holds 64"):
        next(engine.generate(GenerationRequest(prompt="word " * 100)))


CALL = 'root ::= "collect(block=" blk ", count=" [1-9] ")"\nblk ::= "oak_log" | "stone"'


def test_a_grammar_becomes_xgrammar_guided_decoding(engine):
    run(engine, max_tokens=32, grammar=CALL)
    sampling = FakeLLM.instances[0].calls[-1]["sampling_params"].kwargs
    guided = sampling.pop("guided_decoding")
    assert isinstance(guided, Recorded) and guided.kwargs == {"grammar": CALL} and not guided.args
    assert sampling == {"max_tokens": 32, "seed": 0, "add_special_tokens": False, "top_k": 1}  # as without one
    # the complete grammar's end token ends it: "never end" would only repeat end tokens
    run(engine, max_tokens=32, grammar=CALL, end_id=-1, temperature=0.5)
    sampling = FakeLLM.instances[0].calls[-1]["sampling_params"].kwargs
    assert "ignore_eos" not in sampling and "end_id" not in sampling and sampling["temperature"] == 0.5


def test_a_grammar_xgrammar_cannot_parse_is_refused_before_it_is_queued(engine):
    calls = len(FakeLLM.instances[0].calls)
    with pytest.raises(RequestError, match=r"^grammar: .*EBNF parse error at line 1, column 1: Expect ::=$"):
        run(engine, max_tokens=8, grammar='root = "yes"')
    assert len(FakeLLM.instances[0].calls) == calls


def test_an_engine_loaded_without_guided_decoding_refuses_grammars(fake_trtllm, engine_dir):
    from spark_runtime.engines import load_engine

    manifest = json.loads((engine_dir / "engine.json").read_text())
    manifest["guided_decoding_backend"] = None
    (engine_dir / "engine.json").write_text(json.dumps(manifest))
    e = load_engine(engine_dir)
    e._hf_tokenizer = FakeTokenizer()
    assert "guided_decoding_backend" not in FakeLLM.instances[-1].kwargs
    with pytest.raises(RequestError, match="grammar: this engine was loaded without guided decoding"):
        run(e, max_tokens=8, grammar=CALL)
    assert "".join(run(e, max_tokens=8)[0]) == "Hello world!"
