"""The transformers engine on a tiny random Llama made here (CPU, no download): streaming, stats,
cancellation, adapters, and agreement with transformers' own generate()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import RequestError

PROMPT = "<s>user: hello there\nassistant:"
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def make_tiny_llama(folder: Path) -> Path:
    """A byte-level BPE tokenizer trained on a few lines and a 2-layer random Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        "The persona greets the chat and waves hello.",
        "Streaming text arrives one token at a time.",
        "café naïve — ünïcode ✓ テスト",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    hf.chat_template = TEMPLATE
    hf.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(hf),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_adapter(model: Path, out: Path) -> None:
    """A PEFT LoRA for the tiny model with random (non-zero) weights: it changes what is generated."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(LlamaForCausalLM.from_pretrained(model), config).save_pretrained(out)


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transformers-engine")
    make_tiny_llama(root / "model")
    make_adapter(root / "model", root / "adapters" / "persona_a")
    (root / "engine.json").write_text(
        json.dumps(
            {
                "kind": "llm",
                "runtime": "transformers",
                "model_dir": "model",
                "adapters_dir": "adapters",
                "device": "cpu",
                "max_seq_len": 128,
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def engine(engine_dir: Path):
    from spark_runtime.engines import load_engine

    e = load_engine(engine_dir, threads=1)
    yield e
    e.close()


def stream(engine, **kw) -> tuple[list[str], GenerationStats]:
    stats = GenerationStats()
    return list(engine.generate(GenerationRequest(prompt=PROMPT, **kw), stats)), stats


@pytest.mark.parametrize("end_id", [None, -1])
def test_streamed_deltas_join_into_the_non_streamed_output(engine, end_id):
    parts, stats = stream(engine, max_tokens=24, end_id=end_id)
    assert len(parts) > 1, "the engine streams in pieces"
    assert "".join(parts) == engine.complete(GenerationRequest(prompt=PROMPT, max_tokens=24, end_id=end_id))
    assert stats.prompt_tokens > 5 and 0 < stats.generated_tokens <= 24


def test_max_tokens_greedy_determinism_and_stop_words(engine):
    parts, stats = stream(engine, max_tokens=12, end_id=-1)
    assert stats.generated_tokens == 12 and stats.finish_reason == "length"
    assert stream(engine, max_tokens=12, end_id=-1)[0] == parts
    full = "".join(parts)
    stop = next(p for p in parts[2:] if p.strip())
    cut, stats = stream(engine, max_tokens=12, end_id=-1, stop_words=(stop,))
    assert stats.finish_reason == "stop" and full.startswith("".join(cut)) and stop not in "".join(cut)


def test_a_one_token_bad_word_is_never_sampled(engine):
    free, _ = stream(engine, max_tokens=12, end_id=-1)
    # a generated token whose text tokenizes back into one token (the test model's random output
    # has pieces that do not)
    i = next(i for i in range(1, 9) if len(engine.tokenizer.encode(free[i], add_special_tokens=False)) == 1)
    steered, _ = stream(engine, max_tokens=12, end_id=-1, bad_words=(free[i],))
    assert steered[:i] == free[:i] and steered[i] != free[i] and free[i] not in steered


def test_sampling_is_seeded(engine):
    a, _ = stream(engine, max_tokens=10, end_id=-1, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    b, _ = stream(engine, max_tokens=10, end_id=-1, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    assert a == b


def test_closing_the_stream_cancels(engine):
    stats = GenerationStats()
    gen = engine.generate(GenerationRequest(prompt=PROMPT, max_tokens=100, end_id=-1), stats)
    next(gen)
    gen.close()
    assert stats.finish_reason == "cancelled" and stats.generated_tokens < 100
    assert stream(engine, max_tokens=3, end_id=-1)[1].generated_tokens == 3  # the lock was released


def test_model_facts_and_adapters(engine):
    assert engine.chat_template() == TEMPLATE
    assert engine.special_tokens() == {"bos_token": "<s>", "eos_token": "</s>"}
    assert engine.adapter_names() == ["persona_a"]
    with pytest.raises(RequestError, match="unknown LoRA adapter 'nobody'"):
        stream(engine, max_tokens=2, lora_name="nobody")


def test_an_adapter_changes_the_answer_for_its_request_only(engine):
    base, _ = stream(engine, max_tokens=12, end_id=-1)
    adapted, _ = stream(engine, max_tokens=12, end_id=-1, lora_name="persona_a")
    assert adapted != base
    assert stream(engine, max_tokens=12, end_id=-1)[0] == base  # the adapter did not stay on


def test_a_grammar_is_refused_rather_than_ignored(engine):
    message = "grammar-constrained decoding needs the llama.cpp or TensorRT-LLM engine"
    with pytest.raises(RequestError, match=message):
        stream(engine, max_tokens=4, grammar='root ::= "yes"')
    with pytest.raises(RequestError, match=message):
        engine.complete(GenerationRequest(prompt=PROMPT, max_tokens=4, grammar='root ::= "yes"'))
    assert stream(engine, max_tokens=3, end_id=-1)[1].generated_tokens == 3


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(RequestError, match="the context holds 128"):
        next(engine.generate(GenerationRequest(prompt=PROMPT + " hello" * 200)))


def test_repetition_presence_and_frequency_penalties_change_what_repeats(engine):
    plain, _ = stream(engine, max_tokens=24, end_id=-1)
    tokens = engine.tokenizer("".join(plain), add_special_tokens=False)["input_ids"]
    penalised, _ = stream(engine, max_tokens=24, end_id=-1, repetition_penalty=5.0, frequency_penalty=2.0)
    tokens_p = engine.tokenizer("".join(penalised), add_special_tokens=False)["input_ids"]
    assert penalised != plain
    assert max(tokens_p.count(t) for t in set(tokens_p)) <= max(tokens.count(t) for t in set(tokens))
