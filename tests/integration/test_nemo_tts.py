"""The NeMo TTS build path, with no checkpoint and no GPU: a tiny randomly initialised FastPitch (two
speakers, IPA tokens) and HiFi-GAN made by NeMo itself go through the GB10 build's own tts steps
(NeMo build environment, ONNX export there, frontend check) and are served by the real tritonserver's
`tts` model on onnxruntime's CPU provider, beside the Piper voice, as the GB10 engine folder has them.

The voice is random noise with a duration: what is checked is the contract, not the sound."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from build_engines import gb10, nemo_tts
from build_engines.gb10_steps import BuildState, StepRunner
from spark_runtime.text import speakable_pieces
from tests.timing import seconds
from tests.triton_helpers import StreamClient, metric, tensor

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
TWO_PIECES = "Thanks for the raid, everyone. Good luck with the stream!"
# As long as a request may be (4,000 characters), spoken slowly: ~60 chunks, long enough to stop midway.
LONG = " ".join(["Thanks for the raid, everyone, and good luck with the stream."] * 60)


def _need_env() -> Path:
    if not nemo_tts.env_ready(nemo_tts.DEFAULT_ENV):
        pytest.fail(
            f"the NeMo build environment is missing at {nemo_tts.DEFAULT_ENV}: `make test` creates it "
            "(python -m build_engines nemo-env)"
        )
    return nemo_tts.DEFAULT_ENV


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[gb10.Gb10Options, str]:
    env = _need_env()
    work = tmp_path_factory.mktemp("nemo")
    made = subprocess.run(
        [str(nemo_tts.env_python(env)), "-m", "build_engines.nemo_tts_export", "tiny", "--out", str(work)],
        env={**os.environ, **nemo_tts.export_env()},
        capture_output=True,
        text=True,
        timeout=seconds(600),
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    fastpitch, vocoder = (Path(p) for p in made.stdout.split())
    options = gb10.Gb10Options(llm=work / "no-llm", out=work / "gb10", tts_nemo=(fastpitch, vocoder), nemo_env=env)
    steps = [s for s in gb10._speech_steps(options) if s.name.startswith("tts.")]
    assert [s.name for s in steps] == [
        "tts.nemo.env",
        "tts.nemo.export",
        "tts.nemo.check",
        "tts.voices",
        "tts.normaliser",
    ]
    log = work / "build.log"
    with log.open("w") as out:
        ran = StepRunner(BuildState(options.out / ".build-state.json"), out=out).run(steps)
    assert "tts.nemo.export" in ran, log.read_text()
    manifest = gb10.tts_engine_files(options)
    (options.out / "tts" / "engine.json").write_text(json.dumps(manifest), encoding="utf-8")
    return options, log.read_text()


@pytest.fixture(scope="module")
def server(built: tuple[gb10.Gb10Options, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A tritonserver serving only the `tts` model, from the GB10-layout engine folder."""
    from spark_runtime.serve import TritonServer

    options, _ = built
    repo = tmp_path_factory.mktemp("repo")
    (repo / "tts").symlink_to(REPO / "model_repository" / "tts", target_is_directory=True)
    log = tmp_path_factory.mktemp("triton-nemo") / "tritonserver.log"
    srv = TritonServer.on_free_ports(options.out, log)
    srv.model_repository = repo
    srv.start()
    try:
        srv.wait_ready(seconds(180))
        yield srv
    finally:
        srv.stop()


def speak(
    url: str, text: str, voice: str | None = None, *, normalize: bool = True
) -> tuple[list[np.ndarray], set[int], str | None]:
    inputs = [tensor("target_text", [[text.encode()]], "BYTES"), tensor("normalize", [[normalize]], "BOOL")]
    if voice:
        inputs.append(tensor("voice", [[voice.encode()]], "BYTES"))
    client = StreamClient(url)
    try:
        result = client.run("tts", inputs, timeout=seconds(120))
    finally:
        client.close()
    chunks = [r.as_numpy("waveform") for _, r in result.responses]
    rates = {int(r.as_numpy("sample_rate").reshape(-1)[0]) for _, r in result.responses}
    return chunks, rates, result.error


def test_the_build_checks_our_tokenizer_against_nemos_and_records_it(built):
    options, log = built
    folder = options.out / "tts" / nemo_tts.FOLDER
    checked = json.loads((folder / nemo_tts.CHECKED).read_text())
    assert checked["frontend_sentences"] >= 10 and checked["test_samples"] > 0
    assert checked["providers"][-1] == "CPUExecutionProvider"
    info = json.loads((folder / "export.json").read_text())
    assert info["speakers"] == 2 and info["sample_rate"] == 22050


def test_a_rebuild_skips_what_is_done(built):
    options, _ = built
    steps = [s for s in gb10._speech_steps(options) if s.name.startswith("tts.nemo.")]
    log = options.out / "rebuild.log"
    with log.open("w") as out:
        ran = StepRunner(BuildState(options.out / ".build-state.json"), out=out).run(steps)
    assert ran == [] and log.read_text().count("up to date") == 3


def test_the_nemo_voices_are_listed_and_the_default(server):
    client = StreamClient(server.grpc_url)
    try:
        result = client.run("tts", [tensor("list_voices", [[True]], "BOOL")], timeout=seconds(60))
    finally:
        client.close()
    assert result.error is None, result.error
    listing = json.loads(result.texts("voices")[0])
    voices = {v["name"]: v for v in listing["voices"]}
    assert listing["default"] == "tiny_fastpitch-0"
    assert {(voices[v]["engine"], voices[v]["sample_rate"]) for v in ("tiny_fastpitch-0", "tiny_fastpitch-1")} == {
        ("nemo", 22050)
    }
    assert voices["en_US-joe-medium"]["engine"] == "piper"


def test_one_waveform_chunk_per_clause_at_the_models_rate(server):
    chunks, rates, error = speak(server.grpc_url, TWO_PIECES)
    assert error is None, error
    assert len(chunks) == len(speakable_pieces(TWO_PIECES)) >= 2
    assert rates == {22050}
    for chunk in chunks:
        assert chunk.dtype == np.float32 and chunk.ndim == 2 and chunk.shape[0] == 1
        assert chunk.shape[1] % 256 == 0 and chunk.shape[1] > 0  # whole mel frames (hop 256)
        assert np.all(np.abs(chunk) <= 1.0)


def test_the_voice_selects_the_speaker(server):
    zero, _, _ = speak(server.grpc_url, TWO_PIECES, "tiny_fastpitch-0")
    one, _, _ = speak(server.grpc_url, TWO_PIECES, "tiny_fastpitch-1")
    again, _, _ = speak(server.grpc_url, TWO_PIECES, "tiny_fastpitch-0")
    a, b, c = (np.concatenate([x.reshape(-1) for x in chunks]) for chunks in (zero, one, again))
    assert np.array_equal(a, c), "the same voice and text should give the same audio"
    assert a.shape != b.shape or not np.allclose(a, b), "two speakers sounded the same"


def test_digits_are_read_as_words_even_without_the_normaliser(server):
    """NeMo's tokenizer drops digits; the engine spells them when the WFST did not (normalize off here,
    as on a Spark without pynini): the same audio as the words."""
    as_digits, _, error = speak(server.grpc_url, "I have 2 cats and 15 dogs.", normalize=False)
    as_words, _, _ = speak(server.grpc_url, "I have two cats and fifteen dogs.", normalize=False)
    dropped, _, _ = speak(server.grpc_url, "I have cats and dogs.", normalize=False)
    assert error is None, error
    flat = [np.concatenate([c.reshape(-1) for c in chunks]) for chunks in (as_digits, as_words, dropped)]
    assert np.array_equal(flat[0], flat[1])
    assert flat[0].shape != flat[2].shape


def test_an_unknown_voice_is_a_clear_error(server):
    _, _, error = speak(server.grpc_url, TWO_PIECES, "tiny_fastpitch-7")
    assert error is not None and "unknown voice" in error and "tiny_fastpitch-0" in error


def test_a_stopped_stream_stops_synthesis(server):
    """The client's in-band stop ends a long line after its first chunks; the model counts the stop."""
    from spark_client.speech.triton import TritonModels

    before = metric(server.metrics_url, "spark_requests_cancelled_total", model="tts")
    total = len(speakable_pieces(LONG))

    async def scenario() -> int:
        models = TritonModels(server.grpc_url)
        got = 0
        try:
            slow = [tensor("target_text", [[LONG.encode()]], "BYTES"), tensor("speed", [[0.5]], "FP32")]
            stream = models.stream("tts", slow)
            async for _ in stream:
                got += 1
                if got == 2:
                    break
            await stream.aclose()
        finally:
            await models.close()
        return got

    assert asyncio.run(scenario()) == 2
    deadline = time.monotonic() + seconds(10)
    while metric(server.metrics_url, "spark_requests_cancelled_total", model="tts") == before:
        assert time.monotonic() < deadline, "the stop never reached the model"
        time.sleep(0.1)
    assert total > 50
