"""The persona at the controls: one step at a time, the LLM picks one skill call for the goal.

A step: observe the world (sidecar) -> a short prompt (the goal, what the bot sees and holds,
the last few calls and how they went) -> the `llm` model writes one call, constrained by a GBNF
grammar built from this view (game/skills.py) -> the call is checked (a rejected call's reason
is fed back next step) -> a risky call waits for the streamer's approval -> the sidecar runs it.
The narration hears about each call when it starts and when it ends (`on_action`). Playing runs
beside the turn loop; neither waits for the other."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spark_client.speech.llm import LLMClient, SamplingOptions
from spark_client.speech.triton import ModelCallError

from .goals import Goal, GoalBoard
from .observe import summarise
from .protocol import SidecarError
from .sidecar import GameBot
from .skills import (
    Avoid,
    CallError,
    SkillCall,
    WorldView,
    allowed_skills,
    catalogue,
    check_call,
    grammar,
    parse_call,
    risk,
)

log = logging.getLogger(__name__)

PLANNER_RULES = (
    "You control {name}'s Minecraft character. Answer with exactly one skill call in the form "
    "skill(key=value, ...), nothing else. Pick the call that moves the goal forward; call done() "
    "when the goal is complete.\nSkills:\n{skills}"
)
EXAMPLE_VIEW = (
    "Goal: get some wood\nYou are at (3, 64, 8), health 20/20, food 20/20, day.\n"
    "Holding nothing. Inventory: nothing.\nBlocks near: oak_log x6 (4 m), grass_block x200 (1 m)."
)


@dataclass(frozen=True)
class PlayOptions:
    constrained: bool = True  # grammar-guided decoding; off only to measure what it buys
    max_tokens: int = 64  # the 135M model spells a forced call in short tokens: ~1 per 1.3 characters
    temperature: float = 0.3
    seed: int = 7
    step_pause_s: float = 0.5  # between steps, so a stream of failures cannot spin
    failure_pause_s: float = 3.0
    observe_radius: int = 16
    recent_steps: int = 4
    max_repeats: int = 2  # the same call this many times in a row: the next one is refused


@dataclass
class StepRecord:
    goal: str
    call: str
    outcome: str  # "done", "failed", "rejected" (invalid), "repeated", "denied", "goal_done", "error"
    detail: str
    plan_ms: float
    act_ms: float = 0.0
    constrained: bool = True

    def as_event(self) -> dict[str, Any]:
        return {
            "event": "game_step",
            "goal": self.goal,
            "call": self.call,
            "outcome": self.outcome,
            "detail": self.detail[:200],
            "plan_ms": round(self.plan_ms, 1),
            "act_ms": round(self.act_ms, 1),
            "constrained": self.constrained,
        }


ActionHandler = Callable[[str, Goal, SkillCall | None, str], None]  # (phase, goal, call, detail)


def plan_messages(
    persona: str, goal: Goal, observation: dict[str, Any], recent: list[str], allowed: list[str]
) -> list[dict[str, str]]:
    done = "\n".join(f"- {line}" for line in recent) or "- nothing yet"
    return [
        {"role": "system", "content": PLANNER_RULES.format(name=persona, skills=catalogue(allowed))},
        {"role": "user", "content": EXAMPLE_VIEW + "\nLast calls:\n- nothing yet\nNext call:"},
        {"role": "assistant", "content": "collect(block=oak_log, count=3)"},
        {"role": "user", "content": f"Goal: {goal.text}\n{summarise(observation)}\nLast calls:\n{done}\nNext call:"},
    ]


async def plan_call(
    llm: LLMClient,
    *,
    persona: str,
    goal: Goal,
    observation: dict[str, Any],
    view: WorldView,
    recent: list[str],
    options: PlayOptions,
    seed: int,
    avoid: Avoid | None = None,
) -> str:
    """The LLM's answer for one step: the call it wrote (grammar-constrained unless
    `options.constrained` is off). The player and `python -m perf game` both plan through here."""
    allowed = allowed_skills(goal.from_chat)
    prompt = await llm.render(plan_messages(persona, goal, observation, recent, allowed))
    sampling = SamplingOptions(max_tokens=options.max_tokens, temperature=options.temperature, seed=seed)
    rules = grammar(view, allowed, avoid) if options.constrained else None
    return "".join([delta async for delta in llm.stream(prompt, sampling, grammar=rules)])


class GamePlayer:
    def __init__(
        self,
        *,
        bot: GameBot,
        llm: LLMClient,
        board: GoalBoard,
        persona: str,
        options: PlayOptions = PlayOptions(),
        on_action: ActionHandler | None = None,
        record: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot, self.llm, self.board, self.persona = bot, llm, board, persona
        self.options = options
        self.on_action = on_action or (lambda phase, goal, call, detail: None)
        self.record = record or (lambda event: None)
        self.clock = clock
        self.recent: deque[str] = deque(maxlen=options.recent_steps)
        self.steps: list[StepRecord] = []
        self.avoid: dict[str, set[str]] = {}  # skill -> argument values refused as repeats, until another call runs
        self.first_action_ms: dict[str, float] = {}  # goal text -> goal start to its first action start

    async def run(self) -> None:
        """Plays until cancelled; waits while the bot is out of the game."""
        while True:
            if not self.bot.connected:
                try:
                    await self.bot.wait_connected(timeout_s=5.0)
                except TimeoutError:
                    continue
            goal, change = self.board.next_goal()
            if change:
                self.on_action("goal", goal, None, change)
            record = await self.step(goal)
            ok = record.outcome in {"done", "goal_done"}
            await asyncio.sleep(self.options.step_pause_s if ok else self.options.failure_pause_s)

    async def step(self, goal: Goal) -> StepRecord:
        started = self.clock()
        goal.steps += 1
        allowed = allowed_skills(goal.from_chat)
        try:
            observation = await self.bot.observe(self.options.observe_radius)
            view = WorldView.of(observation, bot=self.bot.connection.username)
            text = await plan_call(
                self.llm,
                persona=self.persona,
                goal=goal,
                observation=observation,
                view=view,
                recent=list(self.recent),
                options=self.options,
                seed=self.options.seed + goal.steps,
                avoid=self.avoid,
            )
        except (SidecarError, ModelCallError, CallError) as exc:
            return self._done(goal, "", "error", str(exc), self._ms(started))
        plan_ms = self._ms(started)
        try:
            call = parse_call(text)
            check_call(call, view, allowed)
        except CallError as exc:
            self.recent.append(f"{text.strip()[:60]} -> rejected: {exc}")
            return self._done(goal, text.strip()[:80], "rejected", str(exc), plan_ms)
        if (again := self._rerun(call)) is not None:
            self.recent.append(f"{call} -> refused: {again}")
            value = next((v for k, v in call.args.items() if k not in {"count", "x", "y", "z", "text"}), call.name)
            self.avoid.setdefault(call.name, set()).add(str(value))  # the grammar leaves it out next time
            return self._done(goal, str(call), "repeated", again, plan_ms)
        if call.name == "done":
            self.board.finish("done")
            self.recent.clear()
            self.on_action("goal_done", goal, call, goal.text)
            return self._done(goal, str(call), "goal_done", goal.text, plan_ms)
        reason = risk(call)
        if reason:
            self.on_action("approval", goal, call, reason)
            if not await self.board.ask_approval(call, reason):
                self.recent.append(f"{call} -> denied by the streamer")
                return self._done(goal, str(call), "denied", reason, plan_ms)
        if goal.text not in self.first_action_ms:
            ms = self.first_action_ms[goal.text] = (self.clock() - (goal.started_at or started)) * 1000
            self.record({"event": "game_first_action", "goal": goal.text, "ms": round(ms, 1)})
        self.avoid.clear()
        self.on_action("start", goal, call, "")
        acting = self.clock()
        try:
            detail = await self.bot.skill(call.name, call.args, call.spec.timeout_s)
            outcome = "done"
        except SidecarError as exc:
            detail, outcome = str(exc), "failed"
        self.recent.append(f"{call} -> {outcome}: {detail}"[:160])
        self.on_action(outcome, goal, call, detail)
        return self._done(goal, str(call), outcome, detail, plan_ms, self._ms(acting))

    def _rerun(self, call: SkillCall) -> str | None:
        """Why a call made `max_repeats` times in a row already is refused (None: it is not): a small
        model that found one call tends to repeat it forever, the refusal (in the next prompt) moves
        it on."""
        shown = f"{call} -> "
        tail = list(self.recent)[-self.options.max_repeats :]
        if len(tail) == self.options.max_repeats and all(line.startswith(shown) for line in tail):
            return f"you just did {call} {self.options.max_repeats} times; pick something else"
        return None

    def _ms(self, since: float) -> float:
        return (self.clock() - since) * 1000

    def _done(
        self, goal: Goal, call: str, outcome: str, detail: str, plan_ms: float, act_ms: float = 0.0
    ) -> StepRecord:
        record = StepRecord(goal.text, call, outcome, detail, plan_ms, act_ms, constrained=self.options.constrained)
        self.steps.append(record)
        del self.steps[:-500]
        self.record(record.as_event())
        if record.outcome in {"error", "rejected"}:
            log.info("game step %s: %s", record.outcome, record.detail)
        return record
