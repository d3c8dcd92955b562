"""`spark-client say`: one line through TTS, the speaker/WAV and the avatar's mouth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from spark_client.avatar.driver import AvatarDriver
from spark_client.speech.audio import SessionWav, SoundDevice
from spark_client.speech.playback import PlaybackItem, Player
from spark_client.speech.triton import ModelCallError, TritonModels
from spark_client.speech.tts import TTSClient


async def say_once(
    text: str,
    *,
    triton_url: str,
    model_urls: dict[str, str],
    voice: str | None,
    speed: float,
    wav_path: Path,
    playback: bool,
    vts_url: str | None,
    printer: Callable[[str], None],
) -> int:
    models = TritonModels(triton_url, model_urls)
    vts = None
    if vts_url:
        from spark_client.avatar.vts import VTubeStudioClient

        vts = VTubeStudioClient(vts_url)
        await vts.start()
    device = SoundDevice(22050) if playback and SoundDevice.describe()[0] else None
    avatar = AvatarDriver(vts)
    player = Player(SessionWav(wav_path), device, on_block=avatar.on_block, on_phonemes=avatar.on_phonemes)
    runner = asyncio.create_task(player.run(), name="player")
    started = time.monotonic()
    try:
        first = None
        async for chunk in TTSClient(models).stream(text, voice=voice, speed=speed):
            first = first or time.monotonic()
            player.enqueue(PlaybackItem(1, 0, chunk.pcm, chunk.sample_rate, timing=chunk.timing))
        if first is None:
            printer("nothing to say: the text has no speakable words")
            return 1
        await player.drain(1)
        printer(
            f"said {player.seconds_played:.1f} s of audio; first chunk after "
            f"{(first - started) * 1000:.0f} ms; written to {wav_path}"
        )
        return 0
    except ModelCallError as exc:
        printer(f"error: {exc}")
        return 2
    finally:
        runner.cancel()
        await asyncio.wait({runner}, timeout=2)
        player.close()
        await avatar.aclose()
        if vts is not None:
            await vts.aclose()
        await models.close()
