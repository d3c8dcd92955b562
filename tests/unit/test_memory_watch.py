"""The panel's memory watch without a browser: a real `Memory` on a real ChromaDB store (a temp
folder, embedded by the deterministic stand-in) tells its listeners what it recalled for a turn,
what it wrote and what it removed (by the panel, moderation or prune); a listener that raises
costs nothing; the hub keeps a bounded list of the latest memories for a page that connects and
drops the forgotten ones; a live session wires memory to the screen. And the caption race: a word
that comes after its turn's line ended is dropped."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from spark_client.events import ChatMessage, ModerationEvent, ModerationKind, SpokenWord, TurnStarted
from spark_client.memory.recall import DAY_S, RecalledMemory
from spark_client.memory.records import MemoryKind
from spark_client.memory.service import FORGOTTEN, RECALLED, REMEMBERED, Memory, MemoryEvent
from spark_client.screen.hub import ENDED_TURNS, ScreenHub
from spark_client.screen.server import ScreenSettings
from spark_client.session import LiveSession

from tests.fakes.speech import FakeModels, FakeTTS, HashEmbedder, ScriptedLLM
from tests.unit.test_live_session import ListSource, settings

pytest.importorskip("chromadb")

MARKUP = "<img src=x onerror=alert(1)>"


def said(user: str, text: str, message_id: str, user_id: str = "") -> ChatMessage:
    return ChatMessage(source="twitch", user=user, text=text, user_id=user_id or user, message_id=message_id)


def word(turn: int, text: str, index: int = 0) -> SpokenWord:
    return SpokenWord("Spark", text, turn, 0, index, time.monotonic())


# --- a real Memory's listeners -------------------------------------------------------------------
def test_a_memory_tells_its_listeners_what_it_recalled_wrote_and_forgot(tmp_path: Path):
    events: list[MemoryEvent] = []

    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        memory.listeners.append(events.append)
        await memory.remember(said("PixelHound", "I play bass in Low Tide", "p1"), "A bassist!", "Spark")
        await memory.remember_fact(said("pixelhound", "my cat", "p2"), "pixelhound has a cat named Miso", "Spark")
        await memory.remember_summary("Spark talked with pixelhound about bass", ["pixelhound"])
        recalled = await memory.recall(said("pixelhound", "what do I play in Low Tide?", "p3"))
        forgotten = await memory.forget_ids([events[1].ids[0]])
        memory.close()
        return recalled, forgotten

    recalled, forgotten = asyncio.run(scenario())
    kinds = [(e.event, e.memories[0].kind if e.memories else None) for e in events]
    assert kinds == [
        (REMEMBERED, "exchange"),
        (REMEMBERED, "fact"),
        (REMEMBERED, "summary"),
        (RECALLED, recalled.memories[0].kind),
        (FORGOTTEN, None),
    ]
    exchange = events[0].memories[0]
    assert exchange.user == "pixelhound" and exchange.text.startswith("PixelHound said: I play bass")
    assert events[0].ids == (exchange.id,) and exchange.distance is None
    assert events[1].memories[0].text == "pixelhound has a cat named Miso"
    # the recall's event is what went into the prompt, in its order, with text and scores
    event = events[3]
    assert event.user == "pixelhound" and recalled.lines
    assert event.ids == recalled.ids == tuple(m.id for m in recalled.memories)
    assert event.memories == recalled.memories and [m.line for m in event.memories] == list(recalled.lines)
    assert exchange.id in event.ids
    assert all(m.distance is not None and 0 <= m.distance < 0.75 and m.score is not None for m in event.memories)
    assert events[4].ids == (events[1].ids[0],) and events[4].reason == "panel" and forgotten == 1


def test_moderation_and_prune_tell_the_listeners_which_memories_they_knew_of_are_gone(tmp_path: Path):
    events: list[MemoryEvent] = []

    async def scenario():
        now = [1_800_000_000.0 - 400 * DAY_S]
        memory = Memory.open(HashEmbedder(), path=tmp_path, clock=lambda: now[0])
        memory.listeners.append(events.append)
        await memory.remember(said("old_friend", "hello from long ago", "o1"), "Hi!", "Spark")  # decays
        now[0] += 400 * DAY_S
        await memory.remember(said("troll", "spam spam", "t1", "13"), "Okay.", "Spark")
        await memory.remember(said("troll", "more spam", "t2", "13"), "Hm.", "Spark")
        await memory.remember(said("friend", "hello there", "f1", "7"), "Hi!", "Spark")
        ids = {e.memories[0].text.split(" said:")[0] + ":" + str(n): e.ids[0] for n, e in enumerate(events)}
        events.clear()
        await memory.forget(ModerationEvent(ModerationKind.DELETE_MESSAGE, message_id="t1"))
        await memory.forget(ModerationEvent(ModerationKind.CLEAR_USER, user_id="13"))
        await memory.forget(ModerationEvent(ModerationKind.CLEAR_ALL))  # removes nothing: tells nothing
        report = await memory.prune()
        left = await memory.count()
        memory.close()
        return ids, report, left

    ids, report, left = asyncio.run(scenario())
    assert report.removed == 1 and left == 1
    assert [(e.event, e.reason, e.ids) for e in events] == [
        (FORGOTTEN, "moderation", (ids["troll:1"],)),
        (FORGOTTEN, "moderation", (ids["troll:2"],)),
        (FORGOTTEN, "prune", (ids["old_friend:0"],)),
    ]


def test_a_listener_that_raises_never_costs_the_recall_the_write_or_the_other_listeners(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    heard: list[str] = []

    def broken(event: MemoryEvent) -> None:
        raise RuntimeError("the panel blew up")

    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        memory.listeners += [broken, lambda e: heard.append(e.event)]
        await memory.remember(said("pixelhound", "I play bass in Low Tide", "p1"), "A bassist!", "Spark")
        recalled = await memory.recall(said("pixelhound", "what do I play in Low Tide?", "p2"))
        removed = await memory.forget_ids(list(recalled.ids))
        count = await memory.count()
        memory.close()
        return recalled, removed, count

    with caplog.at_level(logging.ERROR, logger="spark_client.memory.service"):
        recalled, removed, count = asyncio.run(scenario())
    assert recalled.lines and "Low Tide" in recalled.lines[0] and removed == 1 and count == 0
    assert heard == [REMEMBERED, RECALLED, FORGOTTEN]
    assert sum("a listener failed" in r.getMessage() for r in caplog.records) == 3


def test_without_listeners_a_bulk_removal_reads_nothing_more(tmp_path: Path):
    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        await memory.remember(said("troll", "spam spam", "t1", "13"), "Okay.", "Spark")
        reads: list[object] = []
        get = memory.store.get
        memory.store.get = lambda **kw: reads.append(kw) or get(**kw)  # type: ignore[method-assign]
        await memory.forget(ModerationEvent(ModerationKind.CLEAR_USER, user_id="13"))
        memory.close()
        return reads

    assert asyncio.run(scenario()) == []


# --- the hub ---------------------------------------------------------------------------------------
def seen(n: int, user: str = "mika", kind: str = "fact", distance: float | None = 0.2) -> RecalledMemory:
    return RecalledMemory(f"id{n}", f"memory {n} {MARKUP}", user, kind, f"memory {n}", distance, 1.0)


def test_the_hub_publishes_memory_events_and_a_page_that_connects_sees_the_latest():
    hub = ScreenHub(recent_memories=3)
    page = hub.subscribe()
    hub.memory_changed(MemoryEvent(RECALLED, (seen(1), seen(2)), ("id1", "id2"), user="mika"), turn=4)
    hub.memory_changed(MemoryEvent(REMEMBERED, (seen(3, kind="exchange", distance=None),), ("id3",)), turn=4)
    hub.memory_changed(MemoryEvent(RECALLED, (), (), user="mika"), turn=5)  # nothing recalled: nothing sent
    updates = list(page._items)
    assert [(u["type"], u["event"], u["turn"]) for u in updates] == [
        ("memory", "recalled", 4),
        ("memory", "remembered", 4),
    ]
    assert updates[0]["items"][0] == {
        "id": "id1",
        "text": f"memory 1 {MARKUP}",  # data: the page sets it as text
        "user": "mika",
        "kind": "fact",
        "event": "recalled",
        "turn": 4,
        "distance": 0.2,
        "score": 1.0,
    }
    # a recalled-again memory moves to the newest place; the list keeps the latest 3
    hub.memory_changed(MemoryEvent(RECALLED, (seen(1),), ("id1",)), turn=6)
    hub.memory_changed(MemoryEvent(REMEMBERED, (seen(4),), ("id4",)))
    recent = [u for u in hub.snapshot() if u["type"] == "memory"]
    assert len(recent) == 1 and recent[0]["event"] == "recent"
    assert [(i["id"], i["event"], i["turn"]) for i in recent[0]["items"]] == [
        ("id3", "remembered", 4),
        ("id1", "recalled", 6),
        ("id4", "remembered", None),
    ]
    # forgotten memories leave the list (and the pages hear it); unknown ids are passed on too
    hub.memory_changed(MemoryEvent(FORGOTTEN, ids=("id1", "nope"), reason="panel"))
    assert page._items[-1] == {
        "type": "memory",
        "event": "forgotten",
        "turn": None,
        "ids": ["id1", "nope"],
        "reason": "panel",
    }
    again = hub.subscribe()
    assert [i["id"] for u in again._items if u["type"] == "memory" for i in u["items"]] == ["id3", "id4"]
    hub.memory_changed(MemoryEvent(FORGOTTEN, ids=("id3", "id4"), reason="prune"))
    assert not [u for u in hub.snapshot() if u["type"] == "memory"]


def test_the_hubs_memory_listener_gives_recalls_and_exchanges_the_turn_running_now():
    hub = ScreenHub()
    page = hub.subscribe()
    turn: list[int | None] = [7]
    listener = hub.memory_listener(lambda: turn[0])
    listener(MemoryEvent(RECALLED, (seen(1),), ("id1",)))
    listener(MemoryEvent(REMEMBERED, (seen(2, kind=str(MemoryKind.EXCHANGE)),), ("id2",)))
    listener(MemoryEvent(REMEMBERED, (seen(3, kind=str(MemoryKind.FACT)),), ("id3",)))  # written between turns
    turn[0] = None
    listener(MemoryEvent(RECALLED, (seen(4),), ("id4",)))
    assert [(u["event"], u["turn"]) for u in page._items] == [
        ("recalled", 7),
        ("remembered", 7),
        ("remembered", None),
        ("recalled", None),
    ]


def test_a_real_memory_wired_to_the_hub_shows_what_a_turn_recalled_and_forgets_it(tmp_path: Path):
    async def scenario():
        hub = ScreenHub()
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        memory.listeners.append(hub.memory_listener(lambda: 3))
        await memory.remember(said("pixelhound", "I play bass in Low Tide", "p1"), "A bassist!", "Spark")
        page = hub.subscribe()
        recalled = await memory.recall(said("pixelhound", "what do I play in Low Tide?", "p2"))
        await memory.forget_ids(list(recalled.ids))
        memory.close()
        return hub, page, recalled

    hub, page, recalled = asyncio.run(scenario())
    updates = list(page._items)
    assert updates[0]["event"] == "recent" and updates[0]["items"][0]["event"] == "remembered"
    assert updates[1]["event"] == "recalled" and updates[1]["turn"] == 3
    assert [i["id"] for i in updates[1]["items"]] == list(recalled.ids)
    assert "Low Tide" in updates[1]["items"][0]["text"]
    assert updates[2] == {
        "type": "memory",
        "event": "forgotten",
        "turn": None,
        "ids": list(recalled.ids),
        "reason": "panel",
    }
    assert not [u for u in hub.snapshot() if u["type"] == "memory"]


# --- the caption race ------------------------------------------------------------------------------
def test_a_word_that_comes_after_its_turn_ended_is_dropped():
    hub = ScreenHub()
    page = hub.subscribe()
    hub.turn_started(TurnStarted(1, "Spark", "answer", ChatMessage("test", "mika", "story?")))
    hub.word(word(1, "Once", 0))
    hub.turn_ended("Spark", "Once —", {"turn": 1, "interrupted": True})
    hub.word(word(1, "and", 1))  # the player's caption callback, after the loop recorded the turn
    assert [u["type"] for u in page._items] == ["turn", "word", "said"] and hub.late_words == 1
    # the next turn's words go out; a late word of the ended one still does not
    hub.turn_started(TurnStarted(2, "Spark", "answer", None))
    hub.word(word(2, "Hello", 0))
    hub.word(word(1, "there", 2))
    assert [u["type"] for u in page._items][-2:] == ["turn", "word"] and page._items[-1]["text"] == "Hello"
    assert [u.get("text") for u in hub.snapshot() if u["type"] == "word"] == ["Hello"]
    assert hub.late_words == 2


def test_the_ended_turns_the_hub_remembers_are_bounded():
    hub = ScreenHub()
    for n in range(1, ENDED_TURNS * 3):
        hub.turn_ended("Spark", "hi", {"turn": n})
    assert len(hub._ended) == ENDED_TURNS
    hub.word(word(ENDED_TURNS * 3 - 1, "late"))
    assert hub.late_words == 1


# The page scripts run in Node with a stand-in DOM (just what they use), fed the updates in turn.
PAGE_HARNESS = r"""
const fs = require("fs"), vm = require("vm");
class Node {
  constructor(tag) {
    Object.assign(this, { tag, textContent: "", dataset: {}, children: [], parent: null, className: "", value: "" });
    this.classList = { set: new Set(), add(c) { this.set.add(c); }, remove(c) { this.set.delete(c); },
      toggle(c, on) { if (on ?? !this.set.has(c)) this.set.add(c); else this.set.delete(c); } };
    this.style = { setProperty() {}, removeProperty() {} };
    this.listeners = {};
  }
  append(...nodes) { for (const n of nodes) { n.parent = this; this.children.push(n); } }
  prepend(n) { n.parent = this; this.children.unshift(n); }
  remove() { if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this); }
  replaceChildren() { this.children = []; }
  get lastElementChild() { return this.children[this.children.length - 1]; }
  querySelector() { return new Node("span"); }
  addEventListener(event, fn) { this.listeners[event] = fn; }
}
const nodes = {};
const document = { getElementById: (id) => (nodes[id] ||= new Node("div")), createElement: (t) => new Node(t),
  documentElement: { style: { setProperty() {} } }, body: new Node("body") };
let handler = null, onState = null;
const posted = [];
const SparkScreen = { params: new URLSearchParams(""), forgetTokenInAddressBar() {},
  el(tag, cls, text) {
    const n = new Node(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = String(text);
    return n;
  },
  connect(update, state) { handler = update; onState = state; },
  post: async (path, body) => { posted.push([path, body]); return { ok: true }; } };
const context = { document, SparkScreen, TimingChart: { draw() {}, legend() {} }, window: { addEventListener() {} },
  setTimeout: () => 0, clearTimeout() {}, console };
vm.createContext(context);
const [page, updates] = JSON.parse(fs.readFileSync(0, "utf8"));
vm.runInContext(fs.readFileSync(page, "utf8"), context);
onState(true);
(async () => {
  for (const u of updates) {
    if (u.click) await nodes["memory-watch"].children.find((c) => c.dataset.id === u.click)
      .children.find((c) => c.className === "forget").listeners.click();
    else if (u.reconnect) onState(true);
    else handler(u);
  }
  const rows = (nodes["memory-watch"] || new Node("ol")).children;
  console.log(JSON.stringify({
    caption: (nodes.words || {}).textContent, ended: (nodes.caption || { dataset: {} }).dataset.ended,
    speaking: (nodes["speaking-text"] || {}).textContent,
    watch: rows.map((r) => [r.dataset.id, r.dataset.event, r.dataset.turn || null,
      r.children.find((c) => c.className === "text").textContent]),
    posted,
  }));
})();
"""


def run_page(tmp_path: Path, page: str, updates: list[dict]) -> dict:
    import json
    import shutil
    import subprocess

    from spark_client.screen.server import STATIC_DIR

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("needs node to run the page scripts")
    harness = tmp_path / "harness.js"
    harness.write_text(PAGE_HARNESS)
    done = subprocess.run(
        [node, str(harness)],
        input=json.dumps([str(STATIC_DIR / page), updates]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


LATE_WORD = [
    {"type": "turn", "turn": 1, "persona": "Spark", "kind": "answer", "chat": None},
    {"type": "word", "turn": 1, "persona": "Spark", "text": "Once", "piece": 0},
    {"type": "said", "turn": 1, "persona": "Spark", "spoken": "Once —", "interrupted": True, "timings": {}},
    {"type": "word", "turn": 1, "persona": "Spark", "text": "and", "piece": 0},  # late: the line ended
]


def test_the_overlay_shows_no_word_of_a_turn_that_is_not_the_line_being_spoken(tmp_path: Path):
    assert run_page(tmp_path, "overlay.js", LATE_WORD)["caption"] == "Once —"
    later = [
        *LATE_WORD,
        {"type": "turn", "turn": 2, "persona": "Ember", "kind": "answer", "chat": None},
        {"type": "word", "turn": 2, "persona": "Ember", "text": "Hi", "piece": 0},
        {"type": "word", "turn": 1, "persona": "Spark", "text": "late", "piece": 1},
        {"reconnect": True},  # the server replays the state: no word twice, no second "—"
        {"type": "said", "turn": 1, "persona": "Spark", "spoken": "Once —", "interrupted": True, "timings": {}},
        {"type": "turn", "turn": 2, "persona": "Ember", "kind": "answer", "chat": None},
        {"type": "word", "turn": 2, "persona": "Ember", "text": "Hi", "piece": 0},
        {"type": "word", "turn": 2, "persona": "Ember", "text": "there", "piece": 0},
    ]
    shown = run_page(tmp_path, "overlay.js", later)
    assert shown["caption"] == "Hi there" and shown.get("ended") is None


def test_the_panel_shows_no_late_word_and_keeps_its_memory_watch(tmp_path: Path):
    def item(id_: str, event: str, turn: int | None, text: str = MARKUP) -> dict:
        return {"id": id_, "text": text, "user": "mika", "kind": "fact", "event": event, "turn": turn, "distance": 0.2}

    updates = [
        *LATE_WORD,
        {
            "type": "memory",
            "event": "recalled",
            "turn": 2,
            "items": [item("a", "recalled", 2), item("b", "recalled", 2)],
        },
        {"type": "memory", "event": "remembered", "turn": 2, "items": [item("c", "remembered", 2, "new")]},
        {"type": "memory", "event": "recalled", "turn": 3, "items": [item("a", "recalled", 3)]},  # moves to the top
        {"type": "memory", "event": "forgotten", "turn": None, "ids": ["b"], "reason": "moderation"},
        {"click": "c"},  # its Forget button
    ]
    shown = run_page(tmp_path, "panel.js", updates)
    assert shown["speaking"] == "Once —"
    assert shown["watch"] == [["a", "recalled", "3", MARKUP]]  # text, set as textContent
    assert shown["posted"] == [["memory/forget", {"ids": ["c"]}]]
    many = [
        {
            "type": "memory",
            "event": "recent",
            "turn": None,
            "items": [item(f"r{n}", "remembered", None) for n in range(80)],
        }
    ]
    shown = run_page(tmp_path, "panel.js", many)
    assert [row[0] for row in shown["watch"]] == [f"r{n}" for n in range(79, 29, -1)]  # newest first, 50 kept


def test_the_pages_put_no_memory_into_markup():
    from spark_client.screen.server import STATIC_DIR

    assert 'id="memory-watch"' in (STATIC_DIR / "panel.html").read_text()
    assert "innerHTML" not in (STATIC_DIR / "panel.js").read_text()


# --- a live session --------------------------------------------------------------------------------
def test_a_live_session_sends_the_panel_what_each_turn_recalled(tmp_path: Path):
    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path / "memory")
        await memory.remember(said("viewer", "I play bass in Low Tide", "old"), "A bassist!", "Spark")
        session = LiveSession(
            settings(tmp_path, screen=ScreenSettings(port=0)),
            printer=lambda line: None,
            models=FakeModels(),
            llm=ScriptedLLM(),
            tts=FakeTTS(),
            memory=memory,
        )
        ask = ChatMessage(source="list", user="viewer", text="what do I play in Low Tide?", message_id="m1")
        code = await session.run([ListSource("list", [ask], session=session)])
        count = await memory.count()
        memory.close()
        return code, session.screen_hub, count

    code, hub, count = asyncio.run(scenario())
    assert code == 0 and hub is not None and count >= 2  # (the writer may add a fact or a summary)
    recent = [u for u in hub.snapshot() if u["type"] == "memory"][0]["items"]
    recalled = [i for i in recent if i["event"] == "recalled"]
    exchanges = [i for i in recent if i["event"] == "remembered" and i["kind"] == "exchange"]
    assert recalled and "Low Tide" in recalled[0]["text"] and recalled[0]["turn"] == 1
    assert [(i["turn"], "what do I play" in i["text"]) for i in exchanges] == [(1, True)]
