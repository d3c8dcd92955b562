"""The game as a source of things to talk about: what happens in Minecraft (from the sidecar's
events and the player's own actions) becomes high-priority lines for the turn loop, so the
personas comment on the game while they play or watch.

Urgent moments (death, a hit that hurts, a find, a new or finished goal, a call waiting for
approval, another player's chat) are offered at HIGH priority, always. Routine ones (an action
starting or ending, a reflex, someone joining, what a watched player does) come at the priority
of chat, at most one per `routine_gap_s` (an action's end is told when its start was) and never
while a game line still waits to be answered: the game is something to talk about, it must not
crowd out the viewers. Narration lines come from the user `Minecraft`; chat written in the game
comes as that player's own line."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from spark_client.events import GAME_SOURCE, ChatMessage, Priority
from spark_client.game.goals import Goal
from spark_client.game.protocol import SidecarEvent
from spark_client.game.skills import SkillCall, describe
from spark_client.sources.base import ChatSink

log = logging.getLogger(__name__)

NARRATOR = "Minecraft"


class SceneSource(Protocol):
    """Anything that watches a game and reports what happens as events for `GameNarrator.on_event`.

    Today the bot in watch mode is one (game/sidecar.GameBot: `watch` events from what mineflayer
    sees). A screen-capture source with a vision model (on the GB10, a VLM captioning frames of the
    streamer's game) is meant to be another: it runs until cancelled and emits
    `SidecarEvent("watch", {"player": NAME, "action": "captioned", "detail": "<one sentence>"})`
    per caption worth saying, and the narration, its rate limits and the turn loop stay as they are."""

    async def run(self, emit: Callable[[SidecarEvent], None]) -> None: ...


@dataclass(frozen=True)
class NarrationOptions:
    routine_gap_s: float = 10.0
    low_health: float = 10.0
    hungry_food: int = 6


class GameNarrator:
    def __init__(
        self,
        sink: ChatSink,
        *,
        bot_name: str,
        options: NarrationOptions = NarrationOptions(),
        printer: Callable[[str], Any] = print,
        record: Callable[[dict[str, Any]], None] | None = None,
        waiting: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`waiting`: how many game lines the turn loop has not answered yet (routine lines wait for 0)."""
        self.sink, self.bot_name, self.options, self.print, self.clock = sink, bot_name, options, printer, clock
        self.record = record or (lambda event: None)
        self.waiting = waiting
        self.counts: Counter[str] = Counter()
        self._last_routine = -1e9
        self._told_start: SkillCall | None = None
        self._down = False
        self._joined = False
        self._serial = 0

    # ---- what is offered -----------------------------------------------------------------------

    def _offer(
        self, text: str, *, urgent: bool, user: str = NARRATOR, kind: str = "narration", paired: bool = False
    ) -> bool:
        """`paired`: the end of an action whose start was told (no gap needed)."""
        now = self.clock()
        early = not paired and now - self._last_routine < self.options.routine_gap_s
        if not urgent and (early or self.waiting() > 0):
            self.counts["skipped"] += 1
            return False
        if not urgent:
            self._last_routine = now
        self._serial += 1
        self.counts[kind] += 1
        self.record({"event": "game_narration", "kind": kind, "user": user, "text": text[:300], "urgent": urgent})
        return self.sink.offer(
            ChatMessage(
                source=GAME_SOURCE,
                user=user,
                text=text,
                message_id=f"game-{self._serial}",
                priority=Priority.HIGH if urgent else Priority.NORMAL,
            )
        )

    # ---- the sidecar's events ------------------------------------------------------------------

    def on_event(self, event: SidecarEvent) -> None:
        kind = event.kind
        if kind == "damage":
            health, amount, source = event.get("health", 20), event.get("amount", 0), event.get("source")
            by = f" from {str(source).replace('_', ' ')}" if source else ""
            self._offer(
                f"You took {float(amount):.0f} damage{by}; your health is {float(health):.0f} of 20.",
                urgent=float(health) <= self.options.low_health or bool(source),
            )
        elif kind == "death":
            self._offer(f"You died in the game ({event.get('reason') or 'no reason given'}).", urgent=True)
        elif kind == "found":
            self._offer(f"You spotted {str(event.get('block', 'something')).replace('_', ' ')} nearby!", urgent=True)
        elif kind == "chat":
            user, text = str(event.get("username") or ""), str(event.get("message") or "")
            if user and text and user != self.bot_name:
                self._offer(text, urgent=True, user=f"{user} (in the game)", kind="game_chat")
        elif kind in {"player_joined", "player_left"} and event.get("username") != self.bot_name:
            verb = "joined" if kind == "player_joined" else "left"
            self._offer(f"{event.get('username')} {verb} the game.", urgent=False)
        elif kind == "reflex":
            self._offer(f"Reflex: {event.get('detail') or event.get('name')}.", urgent=False)
        elif kind == "health" and int(event.get("food", 20)) <= self.options.hungry_food:
            self._offer("You are getting hungry in the game.", urgent=False)
        elif kind == "watch":
            action, player = str(event.get("action") or ""), str(event.get("player") or "The player")
            detail = str(event.get("detail") or action)
            self._offer(f"{player} {detail}.".replace("..", "."), urgent=action == "died", kind="watch")
        elif kind == "bot_connected":
            text = "You are back in the Minecraft world." if self._joined else "You joined the Minecraft world."
            if self._down or not self._joined:
                self._offer(text, urgent=True)
            self._down, self._joined = False, True
            self.print(f"[game] in the game: {event.get('username', self.bot_name)}")
        elif kind == "bot_down":
            if not self._down:
                self.print(f"[game] {event.get('reason')}; reconnecting")
                if self._joined:
                    self._offer("Your game connection dropped; you are reconnecting.", urgent=True)
            self._down = True

    # ---- the player's actions ------------------------------------------------------------------

    def on_action(self, phase: str, goal: Goal, call: SkillCall | None, detail: str) -> None:
        if phase == "goal":
            self._offer(f"New goal: {detail}.", urgent=True)
        elif phase == "goal_done":
            self._offer(f"You finished the goal: {goal.text}.", urgent=True)
        elif phase == "approval" and call is not None:
            self.print(f"[game] waiting for approval (!approve / !deny): {call} ({detail})")
            self._offer(f"You want to {describe(call)}, but the streamer must approve it: {detail}.", urgent=True)
        elif phase == "start" and call is not None:
            if self._offer(f"You start to {describe(call)}, for the goal: {goal.text}.", urgent=False):
                self._told_start = call
        elif phase in {"done", "failed"} and call is not None:
            told = self._told_start is call
            self._told_start = None
            how = "done" if phase == "done" else "failed"
            self._offer(f"You tried to {describe(call)}: {how}, {detail}.", urgent=False, paired=told)
