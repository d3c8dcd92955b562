"""`spark-client personas list|show|check`: what was loaded, and whether the server and VTube
Studio have what each persona refers to (its voice, its adapter, its model and hotkeys)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from spark_client.personas.files import SHIPPED_DIR, PersonaFileError, load_personas
from spark_client.personas.model import Persona

personas_app = typer.Typer(
    no_args_is_help=True, help="Persona files: list what is loaded, show one, check it against the server."
)

Folder = Annotated[
    Path | None, typer.Option("--personas", help="Folder of persona TOML files (default: the shipped personas/).")
]
CHECK_TIMEOUT_S = 10.0


def _load(folder: Path | None) -> tuple[Persona, ...]:
    try:
        return load_personas(folder or SHIPPED_DIR)
    except PersonaFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@personas_app.command("list")
def list_personas(personas: Folder = None) -> None:
    """One line per persona: role, voice, adapter, share of chat, co-host limits."""
    for p in _load(personas):
        t = p.turns
        typer.echo(
            f"{p.name:12s} {p.role:6s} voice={p.voice or '(default)'} adapter={p.lora_name or '-'} "
            f"share={t.share:g} interject={t.interject_probability:g}/{t.interject_cooldown_s:g}s "
            f"banter_cap={t.banter_cap}  ({Path(p.source).name})"
        )


@personas_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Persona name.")], personas: Folder = None) -> None:
    """Everything loaded for one persona, as the turn loop will use it."""
    found = {p.name.casefold(): p for p in _load(personas)}
    p = found.get(name.casefold())
    if p is None:
        typer.echo(f"error: no persona {name!r}; loaded: {', '.join(x.name for x in found.values())}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{p.name} ({p.role}) from {p.source}")
    typer.echo(f"  {p.description}")
    typer.echo(f"  called by: {', '.join((p.name, *p.aliases))}")
    typer.echo(f"  voice: {p.voice or '(server default)'} at speed {p.speed:g}")
    typer.echo(f"  adapter: {p.lora_name or '-'}" + (f", catchphrase {p.catchphrase!r}" if p.catchphrase else ""))
    typer.echo(f"  avatar: model {p.vts_model or '-'}; hotkeys {dict(p.hotkeys) or '-'}")
    typer.echo(f"  turns: {p.turns}")
    typer.echo(f"  sampling: {p.sampling}")
    typer.echo(f"  up to {p.max_sentences} sentences; resting emotion {p.resting_emotion or '-'}")
    for user, message, answer in p.examples:
        typer.echo(f"  example: {user}: {message}  ->  {answer}")


@personas_app.command("check")
def check(
    personas: Folder = None,
    triton_url: Annotated[
        str | None, typer.Option("--triton-url", envvar="SPARK_TRITON_URL", help="Triton gRPC host:port.")
    ] = None,
    vts: Annotated[bool, typer.Option(help="Also check models and hotkeys in VTube Studio.")] = True,
    vts_url: Annotated[str, typer.Option("--vts-url", help="VTube Studio plugin API.")] = "ws://localhost:8001",
    vts_token_path: Annotated[Path | None, typer.Option(help="Where the VTube Studio token is kept.")] = None,
) -> None:
    """Validates the files, then asks the running server for each voice and adapter and VTube
    Studio for each model and hotkey. Exit 1 when anything referenced is missing."""
    from spark_client.cli import DEFAULT_URL

    loaded = _load(personas)
    typer.echo(f"{len(loaded)} persona file(s) valid: {', '.join(p.name for p in loaded)}")
    problems = asyncio.run(_check(loaded, triton_url or DEFAULT_URL, vts_url if vts else None, vts_token_path))
    for line in problems:
        typer.echo(f"problem: {line}")
    if problems:
        raise typer.Exit(1)
    typer.echo("everything the personas refer to is there")


async def _check(personas: tuple[Persona, ...], url: str, vts_url: str | None, token_path: Path | None) -> list[str]:
    from spark_client.speech.llm import LLMClient, RenderedPrompt, SamplingOptions
    from spark_client.speech.triton import ModelCallError, TritonModels
    from spark_client.speech.tts import TTSClient

    problems: list[str] = []
    models = TritonModels(url)
    try:
        try:
            voices = {v.name for v in await asyncio.wait_for(TTSClient(models).voices(), CHECK_TIMEOUT_S)}
        except (ModelCallError, TimeoutError) as exc:
            return [f"the tts model at {url} did not list its voices: {exc or 'timed out'}"]
        llm = LLMClient(models)
        for p in personas:
            if p.voice and p.voice not in voices:
                problems.append(f"{p.name}: voice {p.voice!r} is not served (voices: {', '.join(sorted(voices))})")
            if p.lora_name:
                try:  # one token with the adapter: the served model loads it or says it has none
                    stream = llm.stream(RenderedPrompt("Hi", ()), SamplingOptions(max_tokens=1), lora_name=p.lora_name)
                    async with asyncio.timeout(CHECK_TIMEOUT_S):
                        async for _ in stream:
                            pass
                except (ModelCallError, TimeoutError) as exc:
                    problems.append(f"{p.name}: adapter {p.lora_name!r}: {exc or 'timed out'}")
            typer.echo(f"{p.name}: voice {p.voice or '(default)'}, adapter {p.lora_name or '-'} checked on {url}")
    finally:
        await models.close()
    if vts_url:
        problems += await _check_vts(personas, vts_url, token_path)
    return problems


async def _check_vts(personas: tuple[Persona, ...], url: str, token_path: Path | None) -> list[str]:
    from spark_client.avatar.vts import VTubeStudioClient
    from spark_client.avatar.vts.protocol import match_hotkey

    client = VTubeStudioClient(url, token_path=token_path)
    await client.start()
    try:
        if not await client.wait_ready(CHECK_TIMEOUT_S):
            return [f"VTube Studio at {url}: not reachable or not authenticated ({client.status().detail})"]
        model, hotkeys = await client.model_hotkeys()
        problems = []
        for p in personas:
            if p.vts_model and p.vts_model.casefold() != model.casefold():
                # one model shows at a time: another persona's model is checked when it is loaded
                typer.echo(
                    f"note: {p.name}'s model {p.vts_model!r} is not loaded ({model!r} is); its hotkeys not checked"
                )
                continue
            for emotion, hotkey in p.hotkeys:
                if match_hotkey(hotkey, hotkeys) is None and not any(h.hotkey_id == hotkey for h in hotkeys):
                    problems.append(f"{p.name}: hotkey {hotkey!r} (for {emotion}) is not in model {model!r}")
        typer.echo(f"VTube Studio: model {model!r}, {len(hotkeys)} hotkey(s) checked")
        return problems
    finally:
        await client.aclose()
