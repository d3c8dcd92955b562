"""What the bot is trying to do, and chat's say in it.

Viewers suggest goals (`!goal build a small hut`) and vote for them (`!vote 2`); `!goals` lists
them. Suggestions are cleaned (no links, no markup, at most 80 characters), limited to one per
viewer a minute and a few open at once, and the most voted one is picked when the vote closes
(`vote_window_s` after the first suggestion) and the bot is free for it. What a viewer's goal may
make the bot do is limited to `skills.CHAT_ALLOWED`; a goal that sounds like harm (TNT, lava,
attacking players, griefing) and any risky call (skills.risk) wait for the streamer or a
moderator: `!approve` / `!deny`. The streamer's own goal (`--mc-goal`, or `!goal` from the
broadcaster) needs no vote and replaces the current one at once."""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spark_client.events import ChatEvent, ChatMessage
from spark_client.sources.base import ChatSink

from .skills import SkillCall

_URL = re.compile(r"(https?://|www\.)\S+|\S+\.(com|net|org|tv|gg|io|ly)\S*", re.I)
_KEEP = re.compile(r"[^A-Za-z0-9 ,.'!?-]")
HARM_WORDS = re.compile(
    r"\b(tnt|lava|grief\w*|burn\w*|fire|explod\w*|blow up|destroy\w*|kill\w*|attack\w*|murder\w*|trap\w*|"
    r"hit|punch\w*|steal\w*)\b",
    re.I,
)
MOB_WORDS = re.compile(
    r"\b(zombies?|skeletons?|creepers?|spiders?|mobs?|monsters?|hostiles?|slimes?|witch(es)?)\b", re.I
)


def clean_goal(text: str, limit: int = 80) -> str:
    """A viewer's goal as it may be shown and spoken: plain words, no links; "" when nothing is left."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c if unicodedata.category(c)[0] not in "CZ" or c == " " else " " for c in text)
    text = _KEEP.sub(" ", _URL.sub(" ", text))
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0]
    return text.strip(" ,.-")


def harm(goal: str) -> str | None:
    """Why a goal needs approval: it names something that hurts players or builds."""
    match = HARM_WORDS.search(goal)
    if not match:
        return None
    if match.group(1).lower().startswith(("kill", "attack", "hit", "punch")) and MOB_WORDS.search(goal):
        return None  # fighting mobs is fine
    return f'it says "{match.group(1)}"'


@dataclass
class Goal:
    text: str
    by: str
    from_chat: bool
    number: int = 0
    voters: set[str] = field(default_factory=set)
    proposed_at: float = field(default_factory=time.monotonic)
    needs_approval: str | None = None  # the reason, until approved
    started_at: float | None = None
    steps: int = 0


@dataclass(frozen=True)
class GoalOptions:
    max_chars: int = 80
    per_viewer_s: float = 60.0
    max_open: int = 5
    vote_window_s: float = 45.0
    goal_time_s: float = 300.0  # a goal that runs this long gives way to the next one
    max_steps: int = 30
    approval_timeout_s: float = 60.0


@dataclass
class PendingApproval:
    call: SkillCall
    reason: str
    decided: asyncio.Future[bool]


class GoalBoard:
    def __init__(
        self, default_goal: str, *, options: GoalOptions = GoalOptions(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.options = options
        self.clock = clock
        self.default = Goal(default_goal, "streamer", from_chat=False)
        self.current: Goal = self.default
        self.open: list[Goal] = []
        self._numbers = 0
        self._last_proposal: dict[str, float] = {}
        self.approval: PendingApproval | None = None
        self.finished: list[tuple[Goal, str]] = []  # (goal, how it ended), newest last

    # ---- chat commands -------------------------------------------------------------------------

    def propose(self, message: ChatMessage, text: str) -> str:
        goal_text = clean_goal(text, self.options.max_chars)
        if len(goal_text) < 3:
            return f"@{message.user} a goal needs a few words, like !goal build a small hut"
        now = self.clock()
        if "broadcaster" in message.badges:  # the streamer decides: no vote
            self._start(Goal(goal_text, message.user, from_chat=False, proposed_at=now))
            return f"goal set: {goal_text}"
        last = self._last_proposal.get(message.user.casefold())
        if last is not None and now - last < self.options.per_viewer_s:
            return f"@{message.user} one goal a minute, please"
        if any(g.text.casefold() == goal_text.casefold() for g in self.open):
            existing = next(g for g in self.open if g.text.casefold() == goal_text.casefold())
            existing.voters.add(message.user.casefold())
            return f"@{message.user} voted for #{existing.number}: {existing.text}"
        if len(self.open) >= self.options.max_open:
            return f"@{message.user} {self.options.max_open} goals are open already: !vote for one"
        self._numbers += 1
        goal = Goal(goal_text, message.user, from_chat=True, number=self._numbers, proposed_at=now)
        goal.voters.add(message.user.casefold())
        goal.needs_approval = harm(goal_text)
        self.open.append(goal)
        self._last_proposal[message.user.casefold()] = now
        wait = f" (waits for the streamer: {goal.needs_approval})" if goal.needs_approval else ""
        return f"goal #{goal.number} by {message.user}: {goal_text}{wait}; !vote {goal.number}"

    def vote(self, message: ChatMessage, number: int) -> str:
        goal = next((g for g in self.open if g.number == number), None)
        if goal is None:
            return f"@{message.user} no open goal #{number}"
        for other in self.open:
            other.voters.discard(message.user.casefold())
        goal.voters.add(message.user.casefold())
        return f"#{goal.number} has {len(goal.voters)} vote(s)"

    def listing(self) -> str:
        if not self.open:
            return f"goal: {self.current.text}; no suggestions (!goal <what to do>)"
        open_goals = "; ".join(f"#{g.number} {g.text} ({len(g.voters)})" for g in self.open)
        return f"goal: {self.current.text}; suggested: {open_goals}"

    def decide(self, message: ChatMessage, approve: bool) -> str:
        if not message.is_privileged:
            return f"@{message.user} only the streamer or a moderator can {'approve' if approve else 'deny'}"
        if self.approval is not None and not self.approval.decided.done():
            self.approval.decided.set_result(approve)
            return f"{'approved' if approve else 'denied'}: {self.approval.call}"
        waiting = next((g for g in self.open if g.needs_approval), None)
        if waiting is None:
            return "nothing waits for approval"
        if approve:
            waiting.needs_approval = None
        else:
            self.open.remove(waiting)
        return f"goal #{waiting.number} {'approved' if approve else 'removed'}: {waiting.text}"

    # ---- the player's side ---------------------------------------------------------------------

    def _start(self, goal: Goal) -> None:
        if self.current is not self.default and self.current is not goal:
            self.finished.append((self.current, "replaced"))
        goal.started_at, goal.steps = self.clock(), 0
        self.current = goal
        if goal in self.open:
            self.open.remove(goal)

    def next_goal(self) -> tuple[Goal, str | None]:
        """The goal for the next step, and what changed (a line for the narration) or None."""
        now, goal = self.clock(), self.current
        if goal.started_at is None:
            goal.started_at = now
        worn_out = goal is not self.default and (
            now - goal.started_at > self.options.goal_time_s or goal.steps >= self.options.max_steps
        )
        if worn_out:
            self.finish("out of time")
        eligible = [g for g in self.open if not g.needs_approval]
        vote_closed = eligible and now - min(g.proposed_at for g in eligible) >= self.options.vote_window_s
        if vote_closed and (self.current is self.default or not self.current.from_chat or worn_out):
            winner = max(eligible, key=lambda g: (len(g.voters), -g.proposed_at))
            self._start(winner)
            return winner, f"chat voted ({len(winner.voters)} vote(s)): {winner.text}, suggested by {winner.by}"
        if worn_out:
            return self.current, f"time is up for the goal: {goal.text}"
        return self.current, None

    def finish(self, how: str) -> Goal:
        goal = self.current
        self.finished.append((goal, how))
        if goal is not self.default:
            self.current = self.default
            self.default.started_at, self.default.steps = self.clock(), 0
        return goal

    async def ask_approval(self, call: SkillCall, reason: str) -> bool:
        """Waits for `!approve` / `!deny` (False after `approval_timeout_s`)."""
        decided: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.approval = PendingApproval(call, reason, decided)
        try:
            return await asyncio.wait_for(decided, self.options.approval_timeout_s)
        except TimeoutError:
            return False
        finally:
            self.approval = None


COMMANDS = ("!goal", "!vote", "!goals", "!approve", "!deny")


class GameCommands:
    """A chat sink in front of the turn queue: game commands go to the goal board (their replies
    to `printer`), every other event goes on to `sink` unchanged."""

    def __init__(self, sink: ChatSink, board: GoalBoard, *, printer: Callable[[str], Any] = print) -> None:
        self.sink, self.board, self.print = sink, board, printer
        self.handled = 0

    def offer(self, event: ChatEvent) -> bool:
        if not isinstance(event, ChatMessage):
            return self.sink.offer(event)
        command, _, rest = event.text.strip().partition(" ")
        command = command.lower()
        if command not in COMMANDS:
            return self.sink.offer(event)
        self.handled += 1
        if command == "!goal":
            reply = self.board.propose(event, rest) if rest.strip() else self.board.listing()
        elif command == "!vote":
            number = rest.strip().lstrip("#")
            reply = self.board.vote(event, int(number)) if number.isdigit() else f"@{event.user} !vote <number>"
        elif command == "!goals":
            reply = self.board.listing()
        else:
            reply = self.board.decide(event, approve=command == "!approve")
        self.print(f"[game] {reply}")
        return True
