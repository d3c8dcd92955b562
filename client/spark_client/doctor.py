"""`spark-client doctor`: is everything the stream needs there, and if not, how to fix it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

from spark_client.health import meminfo
from spark_client.speech.audio import SoundDevice
from spark_client.speech.triton import TritonModels

MODELS = {
    "llm": "the persona's language model",
    "llm_template": "the LLM's chat template",
    "tts": "text to speech",
    "stt": "speech to text",
    "embed": "embeddings for memory",
}
REQUIRED = {"llm", "llm_template", "tts"}
MIN_FREE_DISK_GB = 2.0
MIN_AVAILABLE_MEMORY_GB = 2.0


def gb10_plan_lines() -> list[str]:
    """The default GB10 memory plan, when this checkout has the engine builder beside the client."""
    try:
        from build_engines.plan import plan_gb10
    except ImportError:
        return []
    plan = plan_gb10()
    lines = [
        f"GB10 memory plan (default build): {plan.total_gb:.1f} of {plan.budget_gb:.1f} GB budget"
        + ("" if plan.fits else " - DOES NOT FIT")
    ]
    lines += [f"       {row.component:14s} {row.gb:6.1f} GB  {row.detail}" for row in plan.rows]
    return lines


async def run_doctor(
    *,
    triton_url: str,
    model_urls: dict[str, str],
    vts_url: str,
    vts_wait_s: float,
    data_dir: Path,
    printer: Callable[[str], None],
) -> bool:
    ok = True

    def report(good: bool, what: str, detail: str, fix: str = "", required: bool = True) -> None:
        nonlocal ok
        mark = "ok  " if good else ("FAIL" if required else "warn")
        printer(f"[{mark}] {what}: {detail}" + ("" if good or not fix else f"\n       fix: {fix}"))
        if required and not good:
            ok = False

    models = TritonModels(triton_url, model_urls)
    try:
        for model, role in MODELS.items():
            ready, detail = await models.ready(model)
            report(
                ready,
                f"Triton {model} ({role}) at {models.url(model)}",
                detail,
                "start the server: `make serve` (or `make live`), or pass --triton-url",
                model in REQUIRED,
            )
    finally:
        await models.close()

    from spark_client.avatar.vts import VTubeStudioClient

    vts = VTubeStudioClient(vts_url)
    await vts.start()
    try:
        authorised = await vts.wait_ready(vts_wait_s)
        if authorised:
            await vts.wait_parameters(2.0)
        status = vts.status()
    finally:
        await vts.aclose()
    if authorised:
        mouth = f"; mouth: {', '.join(status.lip_params)}" if status.lip_params else ""
        report(
            True,
            "VTube Studio",
            f"authorised at {vts_url} (VTube Studio {status.vts_version}){mouth}",
            required=False,
        )
    elif status.reachable:
        report(
            False,
            "VTube Studio",
            f"reachable but not authorised: {status.detail}",
            "click 'Allow' for the Spark VTuber plugin in VTube Studio",
            required=False,
        )
    else:
        report(
            False,
            "VTube Studio",
            f"not reachable at {vts_url}; the stream runs without an avatar",
            "start VTube Studio and enable its plugin API (Settings > Start API, port 8001)",
            required=False,
        )

    has_audio, detail = SoundDevice.describe()
    report(has_audio, "audio output", detail, "install PortAudio (libportaudio2) and connect a device", required=False)

    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(data_dir).free / 1e9
    report(
        free_gb >= MIN_FREE_DISK_GB,
        "disk",
        f"{free_gb:.1f} GB free at {data_dir}",
        f"free at least {MIN_FREE_DISK_GB:.0f} GB (session WAVs and memory grow over a stream)",
    )
    mem = meminfo()
    if mem:
        available_gb = mem.get("MemAvailable", 0) / 1e6
        total_gb = mem.get("MemTotal", 0) / 1e6
        report(
            available_gb >= MIN_AVAILABLE_MEMORY_GB,
            "memory",
            f"{available_gb:.1f} of {total_gb:.1f} GB available",
            "stop other programs or pick a smaller engine target",
        )
    for line in gb10_plan_lines():
        printer(line)
    printer("all required checks passed" if ok else "some required checks failed")
    return ok
