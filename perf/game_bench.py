"""python -m perf game: how well the persona picks Minecraft skill calls, with and without the
grammar, through the real `llm` model (no game server needed).

Each situation of perf/game_corpus.py is planned exactly as game/player.py plans a step (same
prompt, same sampling) twice: constrained by the GBNF grammar built from the situation, and
free. Reported per mode: calls that parse, calls that pass the checks (valid), calls that also
move the goal forward (sensible), and the planning time (prompt -> complete call).

With --tasks N, the sidecar alone plays a scripted task N times on a local flying-squid server
(logs -> planks -> crafting table -> placed -> sticks -> wooden pickaxe, plus goto and dig): the
success rate of each skill, the task's time and the sidecar's memory. With --live, `spark-client
live --minecraft` plays while a chat script runs, and the same script runs once without the game:
chat -> first audio with and without playing, and goal -> first action.

python -m perf game [--url HOST:PORT] [--repeats N] [--tasks N] [--live] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spark_client.game.goals import Goal
from spark_client.game.player import PlayOptions, plan_call
from spark_client.game.skills import CallError, WorldView, allowed_skills, check_call, parse_call
from spark_client.speech.llm import LLMClient
from spark_client.speech.triton import TritonModels

from perf.game_corpus import SITUATIONS, Situation
from perf.live_client import live_command, records, triton_url
from perf.machine import git_commit, report_dir_name, utc_now
from perf.minecraft_server import MinecraftServer, node_ready
from perf.stats import Distribution
from spark_runtime.paths import REPO_ROOT


def judge(situation: Situation, text: str) -> dict[str, Any]:
    """Deterministic verdict on one answer: parsed / valid / sensible, and why not."""
    allowed = allowed_skills(situation.from_chat)
    view = WorldView.of(situation.observation, bot="Spark")
    verdict: dict[str, Any] = {"answer": text.strip()[:100], "parsed": False, "valid": False, "sensible": False}
    try:
        call = parse_call(text)
        verdict["parsed"] = True
        check_call(call, view, allowed)
        verdict["valid"] = True
    except CallError as exc:
        verdict["why"] = str(exc)
        return verdict
    wanted = all(call.args.get(key) == value for key, value in situation.want.items())
    verdict["sensible"] = call.name in situation.good and wanted
    if not verdict["sensible"]:
        verdict["why"] = f"{call.name} does not move '{situation.goal}' forward"
    return verdict


async def plan(llm: LLMClient, situation: Situation, *, constrained: bool, seed: int) -> tuple[str, float]:
    """One situation planned as the player plans a step (game/player.plan_call); the time it took."""
    goal = Goal(situation.goal, "bench", from_chat=situation.from_chat)
    started = time.perf_counter()
    text = await plan_call(
        llm,
        persona="Ember",
        goal=goal,
        observation=situation.observation,
        view=WorldView.of(situation.observation, bot="Spark"),
        recent=[],
        options=PlayOptions(constrained=constrained),
        seed=seed,
    )
    return text, (time.perf_counter() - started) * 1000


async def measure(url: str, repeats: int) -> dict[str, list[dict[str, Any]]]:
    models = TritonModels(url)
    llm = LLMClient(models)
    rows: dict[str, list[dict[str, Any]]] = {"grammar": [], "free": []}
    try:
        for repeat in range(repeats):
            for situation in SITUATIONS:
                for mode in rows:
                    text, ms = await plan(llm, situation, constrained=mode == "grammar", seed=7 + repeat)
                    rows[mode].append({"situation": situation.name, "plan_ms": ms, **judge(situation, text)})
    finally:
        await models.close()
    return rows


def summarise(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary = {}
    for mode, results in rows.items():
        n = len(results) or 1
        times = Distribution.of(r["plan_ms"] for r in results)
        summary[mode] = {
            "calls": len(results),
            "parsed_pct": 100 * sum(r["parsed"] for r in results) / n,
            "valid_pct": 100 * sum(r["valid"] for r in results) / n,
            "sensible_pct": 100 * sum(r["sensible"] for r in results) / n,
            "plan_ms_p50": times.p50 if times else None,
            "plan_ms_p95": times.p95 if times else None,
        }
    return summary


def report(rows: dict[str, list[dict[str, Any]]], folder: Path, command: str) -> str:
    summary = summarise(rows)
    lines = [
        "# Game planner: skill calls with and without the grammar",
        "",
        f"`{command}` at {git_commit()}, {len(SITUATIONS)} situations (perf/game_corpus.py).",
        "",
        "| mode | calls | parse | valid | sensible | plan p50 (ms) | plan p95 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        lines.append(
            f"| {mode} | {s['calls']} | {s['parsed_pct']:.0f}% | {s['valid_pct']:.0f}% | {s['sensible_pct']:.0f}% "
            f"| {s['plan_ms_p50'] or 0:.0f} | {s['plan_ms_p95'] or 0:.0f} |"
        )
    lines += ["", "| situation | grammar | free |", "|---|---|---|"]
    for constrained, free in zip(rows["grammar"], rows["free"], strict=True):
        cell = lambda r: ("ok " if r["sensible"] else ("valid " if r["valid"] else "bad ")) + f"`{r['answer']}`"  # noqa: E731
        lines.append(f"| {constrained['situation']} | {cell(constrained)} | {cell(free)} |")
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text)
    (folder / "game.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return text


# ---- the sidecar alone: scripted tasks -----------------------------------------------------------

TASK = (
    ("goto", {"dx": 3, "dz": 0}),
    ("collect", {"block": "oak_log", "count": 3}),
    ("craft", {"item": "oak_planks", "count": 12}),
    ("craft", {"item": "crafting_table", "count": 1}),
    ("place", {"block": "crafting_table"}),
    ("craft", {"item": "stick", "count": 4}),
    ("craft", {"item": "wooden_pickaxe", "count": 1}),
    ("dig", {"dx": 2, "dz": 2}),
)


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


async def scripted_tasks(runs: int) -> dict[str, Any]:
    from spark_client.game.protocol import SidecarError
    from spark_client.game.sidecar import GameBot, GameConnection

    results: list[dict[str, Any]] = []
    rss: list[float] = []
    with MinecraftServer(op_all=True) as server:
        for run in range(runs):
            name = f"Task{run}"
            bot = GameBot(
                GameConnection("127.0.0.1", server.port, username=name, reflexes=False), on_event=lambda e: None
            )
            supervisor = asyncio.create_task(bot.run())
            try:
                await bot.wait_connected(60)
                pos = (await bot.observe())["position"]
                x, y, z = int(pos["x"] // 1), int(pos["y"] // 1), int(pos["z"] // 1)
                x += 8 * run  # each run in fresh ground
                server.command(f"tp {name} {x} {y} {z}")
                for dx in (3, 4, 5):
                    server.command(f"setblock {x + dx} {y} {z + 3} oak_log")
                server.command(f"setblock {x + 2} {y} {z + 2} stone")
                await asyncio.sleep(1.0)
                started = time.perf_counter()
                for skill, args in TASK:
                    call = dict(args)
                    if "dx" in call:
                        call = {"x": x + call.pop("dx"), "y": y, "z": z + call.pop("dz")}
                    t0 = time.perf_counter()
                    try:
                        detail, ok = await bot.skill(skill, call, 60), True
                    except SidecarError as exc:
                        detail, ok = str(exc), False
                    results.append(
                        {
                            "run": run,
                            "skill": skill,
                            "ok": ok,
                            "ms": (time.perf_counter() - t0) * 1000,
                            "detail": detail,
                        }
                    )
                results.append(
                    {
                        "run": run,
                        "skill": "(task)",
                        "ok": all(r["ok"] for r in results if r["run"] == run),
                        "ms": (time.perf_counter() - started) * 1000,
                        "detail": "",
                    }
                )
                if bot._process is not None and (mb := rss_mb(bot._process.pid)) is not None:
                    rss.append(mb)
            finally:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError, SidecarError):
                    await supervisor
    return {"results": results, "sidecar_rss_mb": rss}


# ---- the whole client: playing while chat is answered ---------------------------------------------

LIVE_CHAT = [
    ("mika", "hi! what are you up to today?", 4.0),
    ("Rin_7", "how is the game going?", 10.0),
    ("mika", "what should we build later?", 10.0),
    ("Rin_7", "do you like creepers?", 10.0),
    ("mika", "tell me about your house", 10.0),
    ("Rin_7", "good luck out there!", 10.0),
    ("mika", "see you soon", 15.0),
]


def live_run(url: str, folder: Path, name: str, game: str | None) -> list[dict[str, Any]]:
    script = folder / "chat.jsonl"
    script.write_text("".join(json.dumps({"user": u, "text": t, "delay_s": d}) + "\n" for u, t, d in LIVE_CHAT))
    (folder / f"{name}.jsonl").unlink(missing_ok=True)
    command = live_command(url, folder, name, "--script", str(script))
    if game:
        command += ["--minecraft", game, "--mc-username", "Ember", "--mc-goal", "get some wood"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)
    (folder / f"{name}.log").write_text(done.stdout + done.stderr)
    return records(folder / f"{name}.jsonl")


def live(url: str, folder: Path) -> dict[str, Any]:
    with MinecraftServer(op_all=True) as server:
        for dx in (3, 4, 5, 6):
            server.command(f"setblock {dx} 5 4 oak_log")
        playing = live_run(url, folder, "playing", server.address)
    quiet = live_run(url, folder, "no-game", None)

    def chat_first_audio(records: list[dict[str, Any]]) -> Distribution | None:
        return Distribution.of(
            r.get("first_audio_out_ms") for r in records if r["event"] == "turn" and r["user"] in {"mika", "Rin_7"}
        )

    steps = [r for r in playing if r["event"] == "game_step"]
    return {
        "chat_first_audio_playing": chat_first_audio(playing),
        "chat_first_audio_no_game": chat_first_audio(quiet),
        "goal_first_action_ms": [r["ms"] for r in playing if r["event"] == "game_first_action"],
        "steps": len(steps),
        "step_outcomes": {o: sum(1 for s in steps if s["outcome"] == o) for o in sorted({s["outcome"] for s in steps})},
        "narrations": sum(1 for r in playing if r["event"] == "game_narration"),
        "game_turns": sum(1 for r in playing if r["event"] == "turn" and r["user"] == "Minecraft"),
        "chat_turns": sum(1 for r in playing if r["event"] == "turn" and r["user"] in {"mika", "Rin_7"}),
    }


def extra_report(tasks: dict[str, Any] | None, live_figures: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if tasks is not None:
        results = tasks["results"]
        lines += ["", "## Scripted tasks (the sidecar alone)", "", "| skill | ok / tried | p50 ms |", "|---|---|---|"]
        for skill in dict.fromkeys(r["skill"] for r in results):
            mine = [r for r in results if r["skill"] == skill]
            p50 = Distribution.of(r["ms"] for r in mine)
            lines.append(f"| {skill} | {sum(r['ok'] for r in mine)} / {len(mine)} | {p50.p50 if p50 else 0:.0f} |")
        calls = [r for r in results if r["skill"] != "(task)"]
        rate = 100 * sum(r["ok"] for r in calls) / max(1, len(calls))
        rss = tasks["sidecar_rss_mb"]
        lines += [
            "",
            f"Skill calls that succeeded: {rate:.0f}% of {len(calls)}; sidecar RSS after a task: "
            f"{max(rss) if rss else 0:.0f} MB (max of {len(rss)}).",
        ]
        failures = [f"{r['skill']}: {r['detail']}" for r in calls if not r["ok"]]
        if failures:
            lines += ["", "Failures: " + "; ".join(failures[:10])]
    if live_figures is not None:
        f = live_figures
        playing, quiet = f["chat_first_audio_playing"], f["chat_first_audio_no_game"]
        fmt_dist = lambda d: f"p50 {d.p50:.0f} ms, p95 {d.p95:.0f} ms (n={d.n})" if d else "no turns"  # noqa: E731
        first = ", ".join(f"{ms:.0f} ms" for ms in f["goal_first_action_ms"]) or "none"
        lines += [
            "",
            "## Playing while chat is answered (spark-client live --minecraft)",
            "",
            f"- chat -> first audio while playing: {fmt_dist(playing)}",
            f"- chat -> first audio, same script, no game: {fmt_dist(quiet)}",
            f"- goal -> first action: {first}",
            f"- steps: {f['steps']} {f['step_outcomes']}; narrations offered {f['narrations']}, "
            f"spoken game turns {f['game_turns']}, chat turns {f['chat_turns']}",
        ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf game", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=None, help="a Triton server (host:port); default: start one on free ports")
    parser.add_argument("--repeats", type=int, default=1, help="plan every situation this many times (seeds differ)")
    parser.add_argument("--tasks", type=int, default=0, help="run the scripted task this many times (sidecar only)")
    parser.add_argument("--live", action="store_true", help="spark-client live --minecraft beside a chat script")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default under perf/reports/)")
    args = parser.parse_args(argv)
    if (args.tasks or args.live) and (why := node_ready()) is not None:
        print(f"python -m perf game: {why}", file=sys.stderr)
        return 2
    folder = args.out or REPO_ROOT / "perf" / "reports" / (report_dir_name(utc_now(), git_commit()) + "-game")
    folder.mkdir(parents=True, exist_ok=True)
    with triton_url(args.url, folder / "tritonserver.log") as url:
        rows = asyncio.run(measure(url, max(1, args.repeats)))
        tasks = asyncio.run(scripted_tasks(args.tasks)) if args.tasks else None
        live_figures = live(url, folder) if args.live else None
    command = shlex.join(["python", "-m", "perf", "game", *(argv if argv is not None else sys.argv[2:])])
    text = report(rows, folder, command) + "\n".join(extra_report(tasks, live_figures)) + "\n"
    (folder / "report.md").write_text(text)
    print(text)
    print(f"report: {folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
