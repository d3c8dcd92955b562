"""Speech timing through the real tritonserver: the Piper voice's own phoneme alignments, captions as
each word plays, and the mouth shapes the fake VTube Studio receives following the phonemes."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict

import numpy as np
import pytest
from spark_client.avatar.driver import AvatarDriver
from spark_client.avatar.visemes import Viseme, viseme_of
from spark_client.avatar.vts import BackoffPolicy, VTubeStudioClient
from spark_client.avatar.vts.state import MouthMapping
from spark_client.events import SpokenWord
from spark_client.speech.playback import PlaybackItem, Player
from spark_client.speech.triton import TritonModels
from spark_client.speech.tts import TTSClient

from tests.fakes.vts_server import FakeVTubeStudio
from tests.timing import seconds
from tests.triton_helpers import StreamClient, tensor

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

ROUNDED = "Who moved my blue boots? Do you know?"
SPREAD_AND_CLOSED = "Mama bought peaches. Maybe Bob beams."


def timed_chunks(url: str, text: str, **extra) -> list[tuple[np.ndarray, dict | None]]:
    inputs = [tensor("target_text", [[text.encode()]], "BYTES"), tensor("voice", [[b"joe"]], "BYTES")]
    if "timing" in extra:
        inputs.append(tensor("timing", [[extra["timing"]]], "BOOL"))
    client = StreamClient(url)
    try:
        result = client.run("tts", inputs)
    finally:
        client.close()
    assert result.error is None, result.error
    out = []
    for _, response in result.responses:
        payload = response.as_numpy("timing")
        timing = json.loads(payload.reshape(-1)[0]) if payload is not None else None
        out.append((response.as_numpy("waveform").reshape(-1), timing))
    return out


def bare(word: str) -> str:
    return re.sub(r"[^\w']", "", word).lower()


def test_piper_chunks_carry_the_models_own_phoneme_timing(triton):
    text = "Who moved my blue boots? Mama bought peaches."
    chunks = timed_chunks(triton.grpc_url, text, timing=True)
    assert len(chunks) >= 2  # each sentence in parts, the first part ~0.19 s (spark_runtime/engines/piper_tts.py)
    words = []
    for audio, timing in chunks:
        assert timing is not None and timing["source"] == "alignment"
        assert timing["sample_rate"] == 22050 and timing["samples"] == audio.size
        phonemes = timing["phonemes"]
        assert phonemes and all(0 <= p["start"] < p["end"] <= audio.size for p in phonemes)
        assert all(a["end"] <= b["start"] for a, b in zip(phonemes, phonemes[1:], strict=False))
        # the model's sample counts cover the chunk: the last phoneme ends within the sentence-end pause
        assert audio.size - phonemes[-1]["end"] < 0.5 * 22050
        starts = [w["start"] for w in timing["words"]]
        assert starts == sorted(starts)
        words += [w["text"] for w in timing["words"]]
    assert [bare(w) for w in words] == [bare(w) for w in text.split()]
    first = chunks[0][1]
    assert [p["text"] for p in first["phonemes"]][:2] == ["h", "uː"]  # "Who", in its first 0.19 s


def test_without_timing_the_responses_are_as_before(triton):
    for audio, timing in timed_chunks(triton.grpc_url, "Hello there."):
        assert timing is None and audio.dtype == np.float32 and audio.size
    for _, timing in timed_chunks(triton.grpc_url, "Hello there.", timing=False):
        assert timing is None


def test_the_kokoro_voice_gives_an_honest_estimate(triton):
    inputs = [
        tensor("target_text", [[b"Mama bought peaches."]], "BYTES"),
        tensor("voice", [[b"jf_alpha"]], "BYTES"),
        tensor("timing", [[True]], "BOOL"),
    ]
    client = StreamClient(triton.grpc_url)
    try:
        result = client.run("tts", inputs)
    finally:
        client.close()
    assert result.error is None
    timing = json.loads(result.responses[0][1].as_numpy("timing").reshape(-1)[0])
    assert timing["source"] == "estimate" and timing["sample_rate"] == 24000
    assert [bare(w["text"]) for w in timing["words"]] == ["mama", "bought", "peaches"]


async def speak_to_vts(
    grpc_url: str, text: str, vts: FakeVTubeStudio, tmp_path, *, lips: bool = False
) -> tuple[dict, list[SpokenWord]]:
    """Speaks `text` through the real tts model, the player and the avatar driver into the fake VTube
    Studio; returns the injected values grouped by the viseme then playing (as dicts: MouthOpen, form
    in -1..1 from MouthSmile, and whatever else was injected with them), and the caption events.
    `lips`: the driver hands the VBridger mouth inputs on, as it does to the real client."""
    labels: dict[tuple[float, float], Viseme | None] = {}
    grouped: dict[Viseme | None, list[dict[str, float]]] = defaultdict(list)
    captions: list[SpokenWord] = []
    client = VTubeStudioClient(
        vts.url, tmp_path / "vts_token", backoff=BackoffPolicy(initial=0.05, maximum=0.3), mouth_stale_after=None
    )
    models = TritonModels(grpc_url)
    async with client:
        assert await client.wait_ready(seconds(5))
        if lips:
            assert await vts.wait_until(lambda: client.status().mouth_set == "vbridger", seconds(5))

        class Recording:
            """Forwards to VTube Studio, remembering which viseme each value was sent for."""

            viseme: Viseme | None = None
            accepts_lip_params = lips

            async def inject_mouth(self, open: float, form: float, extra=None) -> None:  # noqa: A002
                values = MouthMapping().values(open, form)  # the client's default mapping
                labels[(values[0].value, values[1].value)] = self.viseme
                await client.inject_mouth(open, form, extra)

            async def trigger_expression(self, name: str, *, hotkey: str | None = None) -> bool:
                return False

        backend = Recording()
        driver = AvatarDriver(backend)

        def on_phonemes(turn, phonemes, rate) -> None:
            main = max(phonemes, key=lambda p: p.end - p.start, default=None)
            backend.viseme = viseme_of(main.text) if main else None
            driver.on_phonemes(turn, phonemes, rate)

        player = Player(None, None, on_block=driver.on_block, on_phonemes=on_phonemes, captions=[captions.append])
        runner = asyncio.create_task(player.run())
        try:
            async for chunk in TTSClient(models).stream(text, voice="joe"):
                assert chunk.timing is not None and chunk.timing.source == "alignment"
                player.enqueue(PlaybackItem(1, 0, chunk.pcm, chunk.sample_rate, timing=chunk.timing, speaker="Spark"))
            await player.drain(1)
            await asyncio.sleep(0.1)  # the pump sends the last value
        finally:
            runner.cancel()
            await models.close()
    for injection in vts.injections:
        key = (injection.values["MouthOpen"], injection.values["MouthSmile"])
        if lips and "JawOpen" not in injection.values:
            continue  # sent before the driver's first value (the client starts with the mouth at rest)
        if key in labels:  # MouthSmile 0..1 -> form -1..1
            grouped[labels[key]].append({**injection.values, "form": key[1] * 2.0 - 1.0})
    return grouped, captions


def mean(samples: list[dict[str, float]], name: str) -> float:
    assert samples, "no mouth values sent during these phonemes"
    return float(np.mean([s[name] for s in samples]))


def test_the_mouth_sent_to_vtube_studio_follows_the_phonemes(triton, tmp_path):
    async def scenario():
        async with FakeVTubeStudio() as vts:
            rounded, words_a = await speak_to_vts(triton.grpc_url, ROUNDED, vts, tmp_path)
            vts.injections.clear()
            other, words_b = await speak_to_vts(triton.grpc_url, SPREAD_AND_CLOSED, vts, tmp_path)
        return rounded, other, words_a, words_b

    rounded, other, words_a, words_b = asyncio.run(asyncio.wait_for(scenario(), seconds(120)))

    during = {v: rounded.get(v, []) + other.get(v, []) for v in Viseme}
    # rounded vowels (u, o, w) round the mouth; spread vowels (i, e) spread it
    assert mean(during[Viseme.ROUNDED], "form") < mean(during[Viseme.SPREAD], "form") - 0.3
    assert mean(rounded[Viseme.ROUNDED], "form") < 0
    # closed consonants (m, b, p) close it; open vowels (a, ɑ, æ) open it
    assert mean(during[Viseme.CLOSED], "MouthOpen") < mean(during[Viseme.OPEN], "MouthOpen") - 0.25
    assert all(set(s) == {"MouthOpen", "MouthSmile", "form"} for v in during.values() for s in v)
    # captions: every word once, in order, with the persona, as its audio played
    assert [bare(w.text) for w in words_a] == [bare(w) for w in ROUNDED.split()]
    assert [bare(w.text) for w in words_b] == [bare(w) for w in SPREAD_AND_CLOSED.split()]
    assert all(w.persona == "Spark" for w in words_a + words_b)
    assert [w.at for w in words_a] == sorted(w.at for w in words_a)


def test_vbridger_mouth_inputs_follow_the_phonemes(triton, tmp_path):
    async def scenario():
        async with FakeVTubeStudio(vbridger=True) as vts:
            rounded, _ = await speak_to_vts(triton.grpc_url, ROUNDED, vts, tmp_path, lips=True)
            vts.injections.clear()
            other, _ = await speak_to_vts(triton.grpc_url, SPREAD_AND_CLOSED, vts, tmp_path, lips=True)
            assert 453 not in vts.errors_sent
        return rounded, other

    rounded, other = asyncio.run(asyncio.wait_for(scenario(), seconds(120)))
    during = {v: rounded.get(v, []) + other.get(v, []) for v in Viseme}
    figures = {
        v.value: {k: round(mean(s, k), 3) for k in ("MouthOpen", "form", "JawOpen", "MouthFunnel", "MouthPressLipOpen")}
        for v, s in during.items()
        if s
    }
    print("mean mouth values by viseme:", json.dumps(figures, ensure_ascii=False))
    # rounded vowels (u, o, w) funnel and pucker the lips; spread ones (i, e) do not, and widen them
    assert mean(during[Viseme.ROUNDED], "MouthFunnel") > mean(during[Viseme.SPREAD], "MouthFunnel") + 0.3
    assert mean(during[Viseme.ROUNDED], "MouthPuckerWiden") < 0 < mean(during[Viseme.SPREAD], "MouthPuckerWiden")
    # m, b, p press the lips together; open vowels part them
    assert mean(during[Viseme.CLOSED], "MouthPressLipOpen") < mean(during[Viseme.OPEN], "MouthPressLipOpen") - 0.3
    assert mean(during[Viseme.CLOSED], "MouthPressLipOpen") < 0
    assert mean(during[Viseme.OPEN], "JawOpen") > mean(during[Viseme.CLOSED], "JawOpen") + 0.2
    # the two it always had still follow the phonemes as before
    assert mean(during[Viseme.ROUNDED], "form") < mean(during[Viseme.SPREAD], "form") - 0.3
