"""One planning step of the game player, with a scripted LLM and a scripted bot (the real server,
sidecar and LLM play in tests/integration/test_minecraft_*.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from spark_client.game.goals import GoalBoard, GoalOptions
from spark_client.game.player import GamePlayer, PlayOptions
from spark_client.game.protocol import SidecarError
from spark_client.speech.llm import RenderedPrompt

OBSERVATION = {"inventory": {"oak_log": 1}, "nearby_blocks": {"oak_log": 4}, "entities": []}


class ScriptedLLM:
    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.grammars: list[str | None] = []
        self.prompts: list[list[dict[str, str]]] = []

    async def render(self, messages):
        self.prompts.append(messages)
        return RenderedPrompt("prompt", ())

    async def stream(self, prompt, options, *, grammar=None):
        self.grammars.append(grammar)
        yield self.answers.pop(0)


class ScriptedBot:
    connection = SimpleNamespace(username="Spark")
    connected = True

    def __init__(self, failure: str | None = None, observation: dict | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.failure = failure
        self.observation = observation or OBSERVATION

    async def observe(self, radius: int = 16):
        return self.observation

    async def skill(self, name, args, timeout_s):
        self.calls.append((name, args))
        if self.failure:
            raise SidecarError(self.failure)
        return f"{name} went fine"


def play(llm: ScriptedLLM, bot: ScriptedBot, steps: int, board: GoalBoard | None = None, constrained=True):
    board = board or GoalBoard("get wood")
    actions: list[tuple[str, str]] = []
    records: list[dict] = []
    player = GamePlayer(
        bot=bot,  # type: ignore[arg-type]
        llm=llm,  # type: ignore[arg-type]
        board=board,
        persona="Ember",
        options=PlayOptions(constrained=constrained),
        on_action=lambda phase, goal, call, detail: actions.append((phase, str(call))),
        record=records.append,
    )

    async def run():
        return [await player.step(board.current) for _ in range(steps)]

    return asyncio.run(run()), actions, records, player


def test_a_valid_call_runs_and_is_narrated_at_both_ends() -> None:
    llm, bot = ScriptedLLM("collect(block=oak_log, count=2)"), ScriptedBot()
    (step,), actions, records, player = play(llm, bot, 1)
    assert step.outcome == "done" and bot.calls == [("collect", {"block": "oak_log", "count": 2})]
    assert actions == [("start", "collect(block=oak_log, count=2)"), ("done", "collect(block=oak_log, count=2)")]
    assert '"oak_log"' in (llm.grammars[0] or "")
    assert [r["event"] for r in records] == ["game_first_action", "game_step"] and records[1]["outcome"] == "done"
    assert "Ember" in llm.prompts[0][0]["content"] and "Goal: get wood" in llm.prompts[0][-1]["content"]
    assert list(player.first_action_ms) == ["get wood"]


def test_a_rejected_call_is_fed_back_and_nothing_runs() -> None:
    llm, bot = (
        ScriptedLLM("collect(block=diamond_ore, count=1)", "I think I should chop a tree", "done()"),
        ScriptedBot(),
    )
    steps, actions, _, _ = play(llm, bot, 3, constrained=False)
    assert [s.outcome for s in steps] == ["rejected", "rejected", "goal_done"]
    assert bot.calls == [] and llm.grammars == [None, None, None]
    assert "no diamond_ore in view" in llm.prompts[1][-1]["content"]  # the reason reaches the next step
    assert actions == [("goal_done", "done()")]


def test_a_failed_skill_says_why_and_a_risky_one_waits() -> None:
    llm, bot = ScriptedLLM("collect(block=oak_log, count=1)"), ScriptedBot(failure="no path to oak_log")
    (step,), actions, _, _ = play(llm, bot, 1)
    assert step.outcome == "failed" and step.detail == "no path to oak_log"
    board = GoalBoard("x", options=GoalOptions(approval_timeout_s=0.05))
    bot = ScriptedBot(observation={**OBSERVATION, "inventory": {"tnt": 1}})
    (step,), actions, _, _ = play(ScriptedLLM("place(block=tnt)"), bot, 1, board=board)
    assert step.outcome == "denied" and bot.calls == [] and actions[0][0] == "approval"


def test_the_same_call_again_and_again_is_refused() -> None:
    call = "collect(block=oak_log, count=1)"
    llm, bot = ScriptedLLM(call, call, call, "craft(item=stick, count=1)"), ScriptedBot()
    steps, _, _, _ = play(llm, bot, 4)
    assert [s.outcome for s in steps] == ["done", "done", "repeated", "done"]
    assert "pick something else" in steps[2].detail and len(bot.calls) == 3
    assert "collect(" not in (llm.grammars[3] or "")  # oak_log was all it could collect
