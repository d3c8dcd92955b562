"""spark-client: the command line. `live` is the main job; `say` and `doctor` help set it up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from spark_client import __version__
from spark_client.health import CLIENT_HEAP_ARENAS, limit_heap_arenas
from spark_client.memory.cli import memory_app
from spark_client.personas.cli import personas_app
from spark_client.turns import PROMPT_BUDGET_TOKENS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Spark VTuber: chat in, persona voice and avatar out, through Triton.",
)
app.add_typer(memory_app, name="memory")
app.add_typer(personas_app, name="personas")

DEFAULT_URL = os.environ.get("SPARK_TRITON_URL", "127.0.0.1:8100")
DATA_DIR = Path(os.environ.get("SPARK_DATA_DIR", Path.home() / ".local" / "share" / "spark-vtuber"))

TritonUrl = Annotated[str, typer.Option("--triton-url", envvar="SPARK_TRITON_URL", help="Triton gRPC host:port")]
LlmUrl = Annotated[
    str | None, typer.Option("--llm-url", help="host:port serving llm + llm_template (default: --triton-url)")
]
SpeechUrl = Annotated[
    str | None, typer.Option("--speech-url", help="host:port serving tts + stt (default: --triton-url)")
]
VtsUrl = Annotated[str, typer.Option("--vts-url", help="VTube Studio plugin API")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spark-client {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("websockets", "chromadb", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    one_blas_thread()
    limit_heap_arenas(CLIENT_HEAP_ARENAS)  # before gRPC, Chroma and the executor start their threads


def one_blas_thread() -> None:
    """Runs numpy's BLAS on one thread in this process. OpenBLAS splits a product of more than a
    few thousand elements over every core, and its threads then spin for ~100 ms waiting for the
    next: a recall scoring a viewer's 24 or more memories (`nearest`) kept a core busy while the
    server read the same turn's chat, +50-90 ms a turn once a stream's viewers had that many. The
    client's products are small: one thread does them in microseconds."""
    import numpy  # noqa: F401 - its BLAS must be loaded to be limited
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


# After a first Ctrl-C or SIGTERM the clean shutdown gets this long before the process exits anyway.
SHUTDOWN_LIMIT_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _force_exit(code: int, why: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"{why}: exiting now\n".encode())  # not print: stderr's lock may be held
    os._exit(code)


async def _until_signalled(main: Coroutine[Any, Any, int], received: list[int]) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if received:
            _force_exit(128 + received[0], f"second {name}")
        received.append(signum)
        typer.echo(f"{name}: shutting down (once more to exit at once)", err=True)
        watchdog = threading.Timer(
            SHUTDOWN_LIMIT_S, _force_exit, (128 + signum, f"shutdown took over {SHUTDOWN_LIMIT_S:.0f} s")
        )
        watchdog.daemon = True
        watchdog.start()
        task.cancel()

    # Left installed on purpose: asyncio.run's own cleanup (cancelling leftover tasks, joining the
    # executor) runs after `main`, and a signal then still means the same; closing the loop removes them.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    return await main


def run_until_signalled(main: Coroutine[Any, Any, int]) -> int:
    """Runs `main` and returns its exit code. SIGINT (Ctrl-C) and SIGTERM cancel it, so its own
    `finally` shuts down cleanly, and the code is 128 + the signal: 130 or 143. A second signal, or
    a shutdown longer than SHUTDOWN_LIMIT_S, exits at once with that code."""
    received: list[int] = []
    code = 1
    try:
        code = asyncio.run(_until_signalled(main, received))
    except asyncio.CancelledError:
        if not received:
            raise
    return 128 + received[0] if received else code


def _model_urls(llm_url: str | None, speech_url: str | None) -> dict[str, str]:
    urls = {}
    if llm_url:
        urls.update(llm=llm_url, llm_template=llm_url)
    if speech_url:
        urls.update(tts=speech_url, stt=speech_url)
    return urls


@app.command()
def live(
    triton_url: TritonUrl = DEFAULT_URL,
    llm_url: LlmUrl = None,
    speech_url: SpeechUrl = None,
    script: Annotated[
        Path | None, typer.Option("--script", help="Replay a JSONL chat script instead of the console.")
    ] = None,
    twitch: Annotated[str | None, typer.Option("--twitch", help="Read this Twitch channel's chat.")] = None,
    twitch_nick: Annotated[str, typer.Option(help="Bot login (or TWITCH_BOT_NICK).")] = "",
    twitch_token_file: Annotated[Path | None, typer.Option(help="File holding the bot's OAuth token.")] = None,
    twitch_reply: Annotated[bool, typer.Option(help="Let the persona answer in chat (needs a token).")] = False,
    twitch_blocklist: Annotated[
        Path | None, typer.Option(help="Words (or re:regex) to drop/mask, one per line.")
    ] = None,
    twitch_host: Annotated[str, typer.Option(hidden=True)] = "irc.chat.twitch.tv",
    twitch_port: Annotated[int, typer.Option(hidden=True)] = 6697,
    twitch_tls: Annotated[bool, typer.Option(hidden=True)] = True,
    console: Annotated[
        bool | None, typer.Option(help="Read chat typed in this terminal (default: when no other source).")
    ] = None,
    wav: Annotated[
        Path | None, typer.Option("--wav", help="Session audio file (default out/session-<time>.wav).")
    ] = None,
    playback: Annotated[bool, typer.Option(help="Play on the sound device when there is one.")] = True,
    vts: Annotated[bool, typer.Option(help="Drive VTube Studio (optional: the stream goes on without it).")] = True,
    vts_url: VtsUrl = "ws://localhost:8001",
    vts_token_path: Annotated[
        Path | None, typer.Option(help="Where the VTube Studio token is kept (user-only file).")
    ] = None,
    memory: Annotated[bool, typer.Option(help="Remember viewers across turns (ChromaDB).")] = True,
    memory_dir: Annotated[
        Path | None, typer.Option(help=f"Persistent memory folder (default {DATA_DIR}/memory).")
    ] = None,
    memory_url: Annotated[
        str | None, typer.Option(help="Use a Chroma server (http://host:port, `chroma run`) instead of the folder.")
    ] = None,
    personas: Annotated[
        Path | None,
        typer.Option(help="Folder of persona TOML files (default: the shipped personas/; see README)."),
    ] = None,
    cohost: Annotated[
        bool, typer.Option(help="Let the co-host speak (--no-cohost: the main persona alone answers everything).")
    ] = True,
    duo_state: Annotated[
        Path | None,
        typer.Option(
            help=f"The duo's rhythm (cooldowns, counts), kept across restarts (default {DATA_DIR}/duo-state.json)."
        ),
    ] = None,
    moderation_delay: Annotated[
        float,
        typer.Option(help="Seconds Twitch chat waits before it can be answered, so moderators can act (0: off)."),
    ] = 1.5,
    prompt_style: Annotated[
        str, typer.Option(help="How chat is framed for the LLM: says-examples, says, tagged-examples, tagged.")
    ] = "says-examples",
    prompt_budget: Annotated[
        int,
        typer.Option(
            min=500,
            help="Prompt tokens per turn (persona, history, memories, chat); the history fills what the rest "
            "leaves. More keeps more of the conversation and costs time on a CPU (README, 'Latency').",
        ),
    ] = PROMPT_BUDGET_TOKENS,
    mic: Annotated[
        str | None,
        typer.Option(
            "--mic",
            help="Listen to a microphone: --mic alone takes the default input, --mic NAME|INDEX picks one "
            "(`spark-client devices` lists them).",
        ),
    ] = None,
    mic_file: Annotated[
        list[Path] | None,
        typer.Option("--mic-file", help="Feed this WAV as if it were the microphone, in real time (repeatable)."),
    ] = None,
    mic_file_at: Annotated[
        list[float] | None,
        typer.Option(help="Seconds after the start at which each --mic-file begins (repeatable, in order)."),
    ] = None,
    mic_file_tail: Annotated[
        float, typer.Option(help="Seconds the fed microphone stays open after the last file.")
    ] = 8.0,
    mic_loopback: Annotated[
        bool, typer.Option(help="Mix the session's own playback back into the fed files (tests the echo path).")
    ] = False,
    mic_loopback_gain: Annotated[float, typer.Option(help="Gain of that playback in the fed signal.")] = 0.5,
    mic_loopback_delay_ms: Annotated[float, typer.Option(help="Its delay, speakers to microphone.")] = 80.0,
    mic_speaker: Annotated[
        str, typer.Option(help="Whose voice the microphone carries, as the personas see it.")
    ] = "streamer",
    echo_cancel: Annotated[
        bool,
        typer.Option(help="Remove the personas' own voice from the mic (--no-echo-cancel with a headset)."),
    ] = True,
    end_silence_ms: Annotated[
        float, typer.Option(help="Silence that ends an utterance (ms); shorter answers faster, cuts pauses.")
    ] = 500.0,
    barge_in: Annotated[
        bool, typer.Option(help="Speaking over a persona stops it (--no-barge-in: it finishes, then answers).")
    ] = True,
    minecraft: Annotated[
        str | None,
        typer.Option(help="Play Minecraft on this Java server (HOST:PORT, offline mode) with a mineflayer bot."),
    ] = None,
    watch_minecraft: Annotated[
        str | None,
        typer.Option(help="Watch a game on this server (HOST:PORT): follow --watch-player and talk about it."),
    ] = None,
    watch_player: Annotated[str | None, typer.Option(help="The player watch mode follows.")] = None,
    mc_username: Annotated[
        str | None, typer.Option(help="The bot's name in the game (default: the main persona's).")
    ] = None,
    mc_version: Annotated[str, typer.Option(help="Minecraft version the server speaks.")] = "1.20.1",
    mc_goal: Annotated[
        str, typer.Option(help="What the personas aim for in the game until chat votes for something else.")
    ] = "gather wood, then craft a crafting table",
    mc_grammar: Annotated[
        bool,
        typer.Option(help="Constrain the LLM's skill calls with a grammar (--no-mc-grammar: only to measure it)."),
    ] = True,
    metrics_jsonl: Annotated[Path | None, typer.Option(help="Append one JSON line of timings per turn.")] = None,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics on 127.0.0.1:PORT (0: off).")] = 0,
    triton_metrics_url: Annotated[
        str | None,
        typer.Option(help="Triton's metrics endpoint, for the memory watch (default: port 8002 on the LLM's host)."),
    ] = None,
    screen: Annotated[
        bool, typer.Option(help="Serve the OBS overlay and the control panel (--no-screen: off).")
    ] = True,
    screen_host: Annotated[
        str, typer.Option(help="Interface for the overlay and panel; beyond loopback needs a token.")
    ] = "127.0.0.1",
    screen_port: Annotated[int, typer.Option(help="Port for the overlay and panel.")] = 8765,
    screen_token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the screen's token (else $SPARK_SCREEN_TOKEN); never given in clear here."),
    ] = None,
    screen_css: Annotated[
        Path | None, typer.Option(help="Your stylesheet for the overlay and panel, served as /custom.css.")
    ] = None,
    screen_tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain): serve the overlay and panel over HTTPS (with --screen-tls-key)."),
    ] = None,
    screen_tls_key: Annotated[Path | None, typer.Option(help="The certificate's PEM private key.")] = None,
) -> None:
    """Run the stream: chat in, persona voice and avatar out, until the chat ends or Ctrl-C."""
    from spark_client.personas import PersonaFileError, load_personas, shipped_personas
    from spark_client.session import LiveSession, LiveSettings, MicSettings
    from spark_client.sources.console import ConsoleSource
    from spark_client.sources.script import ScriptError, ScriptSource, load_script
    from spark_client.turns.loop import LoopOptions
    from spark_client.turns.prompt import PROMPT_STYLES

    if prompt_style not in PROMPT_STYLES:
        typer.echo(f"error: --prompt-style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}", err=True)
        raise typer.Exit(2)
    if moderation_delay < 0:
        typer.echo("error: --moderation-delay must be 0 or more seconds", err=True)
        raise typer.Exit(2)
    mic_settings = _mic_settings(
        mic,
        mic_file or [],
        mic_file_at or [],
        MicSettings(
            tail_s=mic_file_tail,
            loopback=mic_loopback,
            loopback_gain=mic_loopback_gain,
            loopback_delay_ms=mic_loopback_delay_ms,
            speaker=mic_speaker,
            echo_cancel=echo_cancel,
            end_silence_ms=end_silence_ms,
            barge_in=barge_in,
        ),
    )
    screen_settings = _screen_settings(
        screen, screen_host, screen_port, screen_token_file, screen_css, (screen_tls_cert, screen_tls_key)
    )
    if memory_url and memory_dir:
        typer.echo("error: use --memory-dir or --memory-url, not both", err=True)
        raise typer.Exit(2)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        chosen = load_personas(personas) if personas else shipped_personas()
        chosen = chosen if cohost else chosen[:1]  # the main persona comes first
    except PersonaFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    game_settings = _game_settings(
        minecraft, watch_minecraft, watch_player, mc_username or chosen[0].name, mc_version, mc_goal, mc_grammar
    )
    settings = LiveSettings(
        triton_url=triton_url,
        model_urls=_model_urls(llm_url, speech_url),
        wav_path=wav or Path("out") / f"session-{stamp}.wav",
        playback=playback,
        vts_url=vts_url if vts else None,
        vts_token_path=vts_token_path,
        use_memory=memory,
        memory_dir=None if memory_url else memory_dir or (DATA_DIR / "memory"),  # a server holds it, or a folder
        memory_url=memory_url,
        metrics_jsonl=metrics_jsonl,
        prometheus_port=metrics_port,
        personas=chosen,
        duo_state_path=duo_state or (DATA_DIR / "duo-state.json"),
        moderation_delay_s=moderation_delay,
        loop=LoopOptions(prompt_style=PROMPT_STYLES[prompt_style], prompt_budget_tokens=prompt_budget),
        mic=mic_settings,
        game=game_settings,
        screen=screen_settings,
        triton_metrics_url=triton_metrics_url or f"http://{(llm_url or triton_url).rsplit(':', 1)[0]}:8002/metrics",
    )
    session = LiveSession(settings, printer=typer.echo)
    sources = []
    if script is not None:
        try:
            sources.append(ScriptSource(load_script(script), idle=lambda: session.loop.idle()))  # type: ignore[union-attr]
        except (OSError, ScriptError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if twitch:
        from spark_client.sources.twitch import TwitchChatSource, TwitchConfig

        try:
            config = TwitchConfig.from_env(
                twitch.lstrip("#"),
                nick=twitch_nick,
                token_file=twitch_token_file,
                replies_enabled=twitch_reply,
                blocklist_file=twitch_blocklist,
                mention_names=tuple(p.name for p in settings.personas),
                host=twitch_host,
                port=twitch_port,
                tls=twitch_tls,
            )
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        source = TwitchChatSource(config)
        sources.append(source)
        session.repliers.append(source)
    if console or (console is None and not sources and mic_settings is None):
        typer.echo("Type a chat message as a viewer and press Enter ('!stop' interrupts, Ctrl-D ends).")
        sources.append(ConsoleSource())
    raise typer.Exit(run_until_signalled(session.run(sources)))


def _game_settings(
    play: str | None, watch: str | None, player: str | None, username: str, version: str, goal: str, grammar: bool
) -> Any:
    """--minecraft / --watch-minecraft -> GameSettings (None without either); usage errors exit 2."""
    if play is None and watch is None:
        if player:
            _usage_error("--watch-player goes with --watch-minecraft HOST:PORT")
        return None
    from spark_client.game.sidecar import GameConnection, parse_address
    from spark_client.session import GameSettings

    if play is not None and watch is not None:
        _usage_error("use either --minecraft or --watch-minecraft, not both")
    if watch is not None and not (player and player.strip()):
        _usage_error("--watch-minecraft needs --watch-player NAME (whom to watch)")
    name = re.sub(r"[^A-Za-z0-9_]", "", username)[:16]
    if len(name) < 3:
        _usage_error(f"--mc-username {username!r}: 3 to 16 letters, digits or _")
    try:
        host, port = parse_address(play or watch or "")
    except ValueError as exc:
        _usage_error(str(exc))
    mode = "play" if play is not None else "watch"
    connection = GameConnection(host, port, username=name, version=version, mode=mode, watch_player=player)
    return GameSettings(connection, goal=" ".join(goal.split()) or "explore", constrained=grammar)


def _screen_settings(
    on: bool,
    host: str,
    port: int,
    token_file: Path | None,
    css: Path | None,
    tls: tuple[Path | None, Path | None] = (None, None),
) -> Any:
    """--screen-* -> ScreenSettings (None with --no-screen); a usage error exits 2 and never shows the token."""
    if not on:
        return None
    from spark_client.screen.auth import ScreenConfigError, check_binding, load_token, tls_context
    from spark_client.screen.server import ScreenSettings

    if not 0 <= port <= 65535:
        _usage_error(f"--screen-port {port}: choose 1-65535 (0: any free port)")
    try:
        token = load_token(token_file)
        check_binding(host, token)
        context = tls_context(*tls)
    except ScreenConfigError as exc:
        _usage_error(str(exc))
    if css is not None and not css.is_file():
        _usage_error(f"--screen-css {css}: no such file")
    return ScreenSettings(host=host, port=port, token=token, css_path=css, tls=context)


def _usage_error(message: str) -> NoReturn:
    """A command line that cannot work: says why and exits with 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


MIC_DEFAULT = "default"  # what a bare --mic becomes (see run)


def _mic_settings(device: str | None, files: list[Path], at: list[float], base: Any) -> Any:
    """--mic / --mic-file* -> MicSettings (None without either); a usage error exits with 2."""
    from dataclasses import replace

    if device is not None and files:
        _usage_error("use either --mic or --mic-file, not both")
    if len(at) > len(files):
        _usage_error(f"{len(at)} --mic-file-at for {len(files)} --mic-file")
    if any(t < 0 for t in at):
        _usage_error("--mic-file-at must be 0 or more seconds")
    if not 0 <= base.loopback_gain <= 4 or base.loopback_delay_ms < 0:
        _usage_error("--mic-loopback-gain must be within 0-4 and --mic-loopback-delay-ms 0 or more")
    if not 100 <= base.end_silence_ms <= 5000:
        _usage_error("--end-silence-ms must be within 100-5000")
    if not base.speaker.strip():
        _usage_error("--mic-speaker must not be empty")
    if base.loopback and not files:
        _usage_error("--mic-loopback works with --mic-file (a real microphone hears the real speakers)")
    if files:
        from spark_client.sources.mic.feed import FileFeed

        starts = [*at, *([None] * (len(files) - len(at)))]
        pairs = tuple((f, 0.0 if t is None else t) for f, t in zip(files, starts, strict=True))
        try:
            FileFeed(list(pairs), tail_s=0.0)  # reads every file now: a bad one fails before the stream
        except ValueError as exc:
            _usage_error(str(exc))
        return replace(base, files=pairs)
    if device is None:
        return None
    chosen: str | int | None = None if device == MIC_DEFAULT else int(device) if device.isdigit() else device
    return replace(base, device=chosen)


@app.command()
def devices() -> None:
    """List the sound devices (inputs for --mic, outputs for playback)."""
    from spark_client.sources.mic.capture import devices_text

    typer.echo(devices_text())


def run() -> None:
    """The `spark-client` command: `--mic` may come without a device (the default input)."""
    import sys

    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--mic" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            args.insert(i + 1, MIC_DEFAULT)
    app(args=args, prog_name="spark-client")


@app.command()
def say(
    text: Annotated[str, typer.Argument(help="What the persona says.")],
    triton_url: TritonUrl = DEFAULT_URL,
    speech_url: SpeechUrl = None,
    voice: Annotated[str | None, typer.Option(help="TTS voice (default: the server's).")] = None,
    speed: Annotated[float, typer.Option(help="Speaking speed, 0.25-4.")] = 1.0,
    wav: Annotated[Path, typer.Option("--wav", help="Write the audio here too.")] = Path("out/say.wav"),
    playback: Annotated[bool, typer.Option(help="Play on the sound device when there is one.")] = True,
    vts: Annotated[bool, typer.Option(help="Move the avatar's mouth in VTube Studio.")] = True,
    vts_url: VtsUrl = "ws://localhost:8001",
) -> None:
    """Speak a line through TTS and the avatar, without the LLM."""
    from spark_client.say import say_once

    code = run_until_signalled(
        say_once(
            text,
            triton_url=triton_url,
            model_urls=_model_urls(None, speech_url),
            voice=voice,
            speed=speed,
            wav_path=wav,
            playback=playback,
            vts_url=vts_url if vts else None,
            printer=typer.echo,
        )
    )
    raise typer.Exit(code)


@app.command()
def voices(triton_url: TritonUrl = DEFAULT_URL, speech_url: SpeechUrl = None) -> None:
    """List the TTS voices the server has, with their engine and sample rate (for `say --voice`)."""
    from spark_client.speech.triton import ModelCallError, TritonModels
    from spark_client.speech.tts import TTSClient

    async def listed() -> int:
        models = TritonModels(triton_url, _model_urls(None, speech_url))
        try:
            found = await TTSClient(models).voices()
        except ModelCallError as exc:
            typer.echo(f"error: {exc}", err=True)
            return 2
        finally:
            await models.close()
        typer.echo(f"{'voice':16s} {'engine':10s} {'rate':>6s}")
        for v in found:
            typer.echo(f"{v.name:16s} {v.engine:10s} {v.sample_rate:6d}{'  (default)' if v.default else ''}")
        return 0

    raise typer.Exit(run_until_signalled(listed()))


@app.command()
def doctor(
    triton_url: TritonUrl = DEFAULT_URL,
    llm_url: LlmUrl = None,
    speech_url: SpeechUrl = None,
    vts_url: VtsUrl = "ws://localhost:8001",
    vts_wait: Annotated[float, typer.Option(help="Seconds to wait for VTube Studio to authorise.")] = 3.0,
) -> None:
    """Check Triton and each model, VTube Studio, the audio device, disk and memory headroom."""
    from spark_client.doctor import run_doctor

    async def checked() -> int:
        ok = await run_doctor(
            triton_url=triton_url,
            model_urls=_model_urls(llm_url, speech_url),
            vts_url=vts_url,
            vts_wait_s=vts_wait,
            data_dir=DATA_DIR,
            printer=typer.echo,
        )
        return 0 if ok else 1

    raise typer.Exit(run_until_signalled(checked()))
