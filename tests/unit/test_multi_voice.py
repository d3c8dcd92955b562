"""The `tts` model's voice routing: one model, several engines, each request to its voice's owner."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from spark_runtime import speech_services
from spark_runtime.engines.base import SpeechRequest
from spark_runtime.engines.multi_voice import MultiVoiceEngine, voice_catalog
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.requests import wants_voice_list
from tests.fakes import pb_utils
from tests.timing import seconds


class ToneEngine:
    """A TTS engine that answers each piece with a constant tone at its own rate."""

    def __init__(self, runtime: str, names: list[str], rate: int) -> None:
        self.runtime = runtime
        self.default_voice = names[0]
        self._names = names
        self._rate = rate
        self.requests: list[SpeechRequest] = []
        self.closed = False

    def voices(self) -> list[str]:
        return list(self._names)

    def sample_rate(self, voice: str | None = None) -> int:
        return self._rate

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        assert request.voice in self._names, "the router passes a resolved voice"
        self.requests.append(request)
        for _ in filter(str.strip, request.text.split(".")):
            yield np.full(self._rate // 10, 0.1, dtype=np.float32)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def engines() -> dict[str, ToneEngine]:
    return {
        "piper": ToneEngine("piper", ["joe"], 22050),
        "kokoro": ToneEngine("kokoro", ["jf_alpha", "jm_kumo"], 24000),
    }


def test_each_voice_goes_to_the_engine_that_owns_it(engines):
    multi = MultiVoiceEngine(engines, default_voice="joe")
    assert multi.voices() == ["joe", "jf_alpha", "jm_kumo"]
    assert list(multi.synthesize(SpeechRequest("Hi. There", voice="jm_kumo", speed=1.5)))
    assert engines["kokoro"].requests == [SpeechRequest("Hi. There", voice="jm_kumo", speed=1.5)]
    assert not engines["piper"].requests
    assert (multi.engine_of("jf_alpha"), multi.sample_rate("jf_alpha")) == ("kokoro", 24000)
    assert (multi.engine_of("joe"), multi.sample_rate("joe")) == ("piper", 22050)


def test_no_voice_means_the_manifests_default(engines):
    multi = MultiVoiceEngine(engines, default_voice="jf_alpha")
    list(multi.synthesize(SpeechRequest("Hi.")))
    assert engines["kokoro"].requests[0].voice == "jf_alpha"
    assert multi.sample_rate(None) == 24000 and multi.engine_of(None) == "kokoro"


def test_an_unknown_voice_is_a_request_error_naming_every_voice(engines):
    multi = MultiVoiceEngine(engines, default_voice="joe")
    with pytest.raises(RequestError, match=r"unknown voice 'amy'; available: joe, jf_alpha, jm_kumo"):
        multi.sample_rate("amy")
    with pytest.raises(RequestError, match="available: joe, jf_alpha, jm_kumo"):
        multi.synthesize(SpeechRequest("Hi.", voice="amy"))


def test_a_voice_two_engines_claim_or_a_missing_default_is_a_build_error(engines):
    engines["other"] = ToneEngine("piper", ["jm_kumo"], 16000)
    with pytest.raises(EngineMissingError, match="jm_kumo"):
        MultiVoiceEngine(engines, default_voice="joe")
    del engines["other"]
    with pytest.raises(EngineMissingError, match="default voice 'amy'"):
        MultiVoiceEngine(engines, default_voice="amy")


def test_close_closes_every_engine(engines):
    MultiVoiceEngine(engines, default_voice="joe").close()
    assert all(e.closed for e in engines.values())


def test_the_catalog_names_engine_and_rate_for_one_engine_or_many(engines):
    multi = MultiVoiceEngine(engines, default_voice="joe")
    assert voice_catalog(multi) == [
        {"name": "joe", "engine": "piper", "sample_rate": 22050, "default": True},
        {"name": "jf_alpha", "engine": "kokoro", "sample_rate": 24000, "default": False},
        {"name": "jm_kumo", "engine": "kokoro", "sample_rate": 24000, "default": False},
    ]
    assert voice_catalog(engines["kokoro"])[0] == {
        "name": "jf_alpha",
        "engine": "kokoro",
        "sample_rate": 24000,
        "default": True,
    }


def test_list_voices_flag_is_optional_and_off_by_default():
    assert wants_voice_list({}) is False
    assert wants_voice_list({"list_voices": np.array([[True]])}) is True
    assert wants_voice_list({"list_voices": np.array([[False]]), "target_text": np.array([[b"x"]])}) is False
    with pytest.raises(RequestError, match="one value"):
        wants_voice_list({"list_voices": np.array([[True, False]])})


@pytest.fixture
def service(engines, monkeypatch, tmp_path):
    multi = MultiVoiceEngine(engines, default_voice="joe")
    monkeypatch.setattr(speech_services, "load_engine", lambda *a, **k: multi)
    monkeypatch.setenv("SPARK_ENGINE_DIR", str(tmp_path))
    args = {"model_name": "tts", "model_repository": str(tmp_path), "model_config": json.dumps({"parameters": {}})}
    service = speech_services.TTSService(pb_utils, args)
    yield service
    service.close()


def run(service, **inputs) -> pb_utils.ResponseSender:
    request = pb_utils.InferenceRequest(**inputs)
    service.runner.submit(request)
    assert request.sender.done.wait(seconds(10))
    return request.sender


def test_the_model_answers_list_voices_with_one_json_response(service):
    sender = run(service, list_voices=np.array([[True]]))
    (voices,) = sender.outputs("voices")
    assert voices.shape == (1, 1) and not sender.outputs("waveform") and not sender.errors()
    listing = json.loads(voices[0, 0])
    assert listing["default"] == "joe"
    assert [(v["name"], v["engine"], v["sample_rate"]) for v in listing["voices"]] == [
        ("joe", "piper", 22050),
        ("jf_alpha", "kokoro", 24000),
        ("jm_kumo", "kokoro", 24000),
    ]
    from spark_client.speech.tts import VoiceInfo, parse_voices  # the client reads what the model writes

    assert parse_voices(voices[0, 0])[0] == VoiceInfo("joe", "piper", 22050, default=True)


def test_each_response_carries_its_voices_own_rate(service):
    for voice, rate in (("jf_alpha", 24000), ("joe", 22050)):
        sender = run(service, target_text=np.array([[b"One. Two."]], dtype=object), voice=np.array([[voice.encode()]]))
        assert len(sender.outputs("waveform")) == 2
        assert {int(r.reshape(-1)[0]) for r in sender.outputs("sample_rate")} == {rate}


def test_an_unknown_voice_is_an_error_response_listing_the_voices(service):
    sender = run(service, target_text=np.array([[b"Hi."]], dtype=object), voice=np.array([[b"amy"]]))
    (error,) = sender.errors()
    assert "unknown voice 'amy'" in error and "joe, jf_alpha, jm_kumo" in error


def test_without_list_voices_or_text_the_request_is_an_error(service):
    (error,) = run(service).errors()
    assert "target_text is required" in error
