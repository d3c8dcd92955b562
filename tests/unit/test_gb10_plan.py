"""The GB10 memory planner: shapes, per-component figures, refusals and the bandwidth roofline."""

from __future__ import annotations

import json

import pytest

from build_engines.__main__ import main
from build_engines.gb10_shapes import LLAMA_SHAPES, SPEECH_TOKENS_PER_S, shape_for_params
from build_engines.plan import EFFICIENCY, PUBLISHED_DECODE, PlanInputs, plan_gb10, weights_gb

L70, L8, L3, L1 = (LLAMA_SHAPES[n] for n in ("llama-3.1-70b", "llama-3.1-8b", "llama-3.2-3b", "llama-3.2-1b"))


def test_llama_shapes_give_the_published_parameter_counts():
    assert L70.params == pytest.approx(70.55e9, rel=0.005)
    assert L8.params == pytest.approx(8.03e9, rel=0.005)
    assert L3.params == pytest.approx(3.21e9, rel=0.005)
    assert L1.params == pytest.approx(1.24e9, rel=0.005)
    # KV cache per token: 2 (K and V) x layers x KV heads x head dim x bytes
    assert L70.kv_bytes_per_token("fp8") == 2 * 80 * 8 * 128
    assert L8.kv_bytes_per_token("bf16") == 2 * 32 * 8 * 128 * 2
    assert L1.kv_bytes_per_token("fp8") == 2 * 16 * 8 * 64
    assert shape_for_params(70e9) is L70 and shape_for_params(8e9) is L8 and shape_for_params(1e9) is L1


def test_weights_by_format():
    # quantised linear layers + BF16 embeddings and lm_head (ModelOpt leaves those unquantised)
    embed = L70.embedding_params
    assert weights_gb(L70, "bf16") == pytest.approx(L70.params * 2 / 1e9)
    assert weights_gb(L70, "fp8") == pytest.approx(((L70.params - embed) * 1 + embed * 2) / 1e9)
    assert weights_gb(L70, "nvfp4") == pytest.approx(((L70.params - embed) * 0.5625 + embed * 2) / 1e9)
    assert 42 < weights_gb(L70, "nvfp4") < 43.5


def test_default_plan_70b_nvfp4_with_speech_fits_under_100_gb_and_a_draft_only_when_planned():
    plan = plan_gb10()
    assert plan.inputs.llm is L70 and plan.inputs.qformat == "nvfp4" and plan.inputs.draft is None
    components = {r.component for r in plan.rows}
    assert {"LLM weights", "LLM KV cache", "LoRA cache", "Whisper", "TTS", "embeddings", "OS", "client"} <= components
    assert not any(c.startswith("draft") for c in components) and len(plan.decode) == 1
    assert plan.fits and plan.total_gb < 100
    assert plan.row("LLM KV cache").gb == pytest.approx(2 * 80 * 8 * 128 * 8192 * 2 / 1e9)
    assert plan.row("LoRA cache").gb == pytest.approx(12 * 16 * 80 * (16384 + 9216 + 9216 + 16384) * 2 / 1e9)
    drafted = plan_gb10(draft=L8)
    assert drafted.row("draft weights").gb > 8 and drafted.fits and len(drafted.decode) == 3
    assert any("LoRA with a draft model is untested" in note for note in drafted.notes)


def test_70b_bf16_is_refused():
    plan = plan_gb10(qformat="bf16", draft=None)
    assert not plan.fits and plan.row("LLM weights").gb > 140


def test_quantising_a_70b_model_on_the_spark_does_not_fit_and_the_plan_says_what_to_do_instead():
    """ModelOpt calibrates the BF16 model: 70.6B x 2 bytes is more than the Spark has."""
    plan = plan_gb10(draft=L8)
    steps = {r.step: r for r in plan.build}
    assert set(steps) == {"llm.quantize", "draft.quantize"}  # no engine build on the PyTorch backend
    assert steps["llm.quantize"].gb > weights_gb(L70, "bf16") > 128 > plan.budget_gb
    assert steps["draft.quantize"].gb < plan.budget_gb
    assert plan.fits and not plan.build_fits  # it would serve, once quantised elsewhere
    (refusal,) = plan.build_refusals()
    assert refusal.startswith("llm.quantize needs about 15")
    assert any("nvidia/Llama-3.3-70B-Instruct-FP4" in note for note in plan.notes)
    assert "| llm.quantize |" in plan.to_markdown() and plan.to_dict()["build_fits"] is False


def test_an_8b_model_quantises_on_the_spark_and_a_prequantised_one_skips_the_step():
    plan = plan_gb10(llm=L8, draft=None)
    assert plan.build_fits and [r.step for r in plan.build] == ["llm.quantize"]
    assert plan.build[0].gb == pytest.approx(weights_gb(L8, "bf16") + 4.0 + 1.0 + 6.0)
    prequantised = plan_gb10(llm_source="nvfp4")
    assert prequantised.build == () and prequantised.build_fits
    assert not any("cannot be quantised" in note for note in prequantised.notes)


def test_roofline_predictions():
    plan = plan_gb10()
    (llm,) = plan.decode
    assert 6.0 < llm.roofline_tok_s < 7.0  # 273 GB/s over ~41 GB read per token
    assert 4.0 < llm.expected_tok_s < 5.0  # published: 4.5 tok/s (Llama 3.3 70B NVFP4)
    small = plan_gb10(llm=L8).decode[0]
    assert small.roofline_tok_s > 45 and small.expected_tok_s > 5 * SPEECH_TOKENS_PER_S
    with_draft = plan_gb10(draft=L8).decode
    assert with_draft[-1].roofline_tok_s > llm.roofline_tok_s  # speculative decoding pays off at batch 1


def test_the_efficiency_is_what_published_spark_figures_reach_at_their_own_context():
    """The expected column is calibrated, not guessed: each published figure over its roofline."""
    for model, qformat, context, tok_s in PUBLISHED_DECODE:
        roofline = plan_gb10(llm=LLAMA_SHAPES[model], qformat=qformat, context=context).decode[0].roofline_tok_s
        assert tok_s / roofline == pytest.approx(EFFICIENCY, abs=0.04)
    # 8B NVFP4: 38.8 tok/s measured with a short prompt; a full 8192-token context reads more per token
    short = plan_gb10(llm=L8, context=229).decode[0]
    assert short.expected_tok_s == pytest.approx(38.8, rel=0.02)


def test_int4_awq_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="sm_121"):
        plan_gb10(PlanInputs(qformat="int4_awq"))


def test_cli_table_json_and_refusal(capsys):
    assert (
        main(
            [
                "plan",
                "gb10",
                "--llm-params",
                "70e9",
                "--qformat",
                "nvfp4",
                "--context",
                "8192",
                "--concurrency",
                "2",
                "--draft-params",
                "8e9",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| LLM weights | llama-3.1-70b 70.0B nvfp4 |" in out and "roofline tok/s" in out

    assert main(["plan", "gb10", "--llm-params", "8e9", "--no-draft", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and data["rows"][0]["detail"].startswith("llama-3.1-8b")

    assert main(["plan", "gb10", "--llm-params", "70e9", "--qformat", "bf16", "--no-draft"]) == 3
    assert "refused" in capsys.readouterr().err
    assert main(["plan", "gb10", "--qformat", "int4_awq"]) == 2
    assert "not supported" in capsys.readouterr().err
