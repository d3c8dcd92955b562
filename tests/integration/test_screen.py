"""The streamer's screen in a real browser: headless Chromium (Debian's chromium +
chromium-driver, driven by Selenium) loads `/overlay` and `/panel` of `spark-client live`
running a script against the real tritonserver. The overlay's captions appear and grow piece
by piece with the voice, the panel shows the turns and their timings, its interrupt button
stops the persona (the server's cancelled-request count goes up), a viewer's markup is shown
as text and never run, memory search finds what was said, and the memory watch lists a fact
recalled into a turn's prompt (stored before the stream) whose forget button removes it from the
store and the list. Screenshots go to
$SPARK_TEST_ARTIFACTS/screen (default test-artifacts/screen); with SPARK_UPDATE_DOCS_SCREENSHOT=1
the panel's is also copied to docs/screen-panel.png (the README shows it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.fakes.personas import write_personas
from tests.timing import seconds
from tests.triton_helpers import metric

pytestmark = [pytest.mark.server, pytest.mark.e2e]

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")
MARKUP = "<script>alert(1)</script><b>hi</b>"
STORY = "Tell me a very long story about a dragon."
PERSONAS = [  # greedy decoding; only the interrupt ends Spark's story, Ember answers briefly
    {"name": "Spark", "description": "A cheerful AI streamer.", "sampling": {"max_tokens": 2000, "temperature": 0.0}},
    {"name": "Ember", "description": "A calm co-host.", "sampling": {"max_tokens": 40, "temperature": 0.0}},
]
PERSONAS[0]["max_sentences"] = 1000
# A fact recalled for mallory's question (cosine distance ~0.27 with all-MiniLM-L6-v2) and not for
# mika's story (~0.80, past the 0.6 within which recall reads another viewer's memory): in Spark's
# prompt the small model would only repeat it.
SEED = "mallory wants to know Ember's name."
SCRIPT = [
    {"user": "mika", "text": STORY, "delay_s": 1.0},
    {"user": "mallory", "text": f"{MARKUP} Ember, what is your name?", "wait_for_idle": True, "delay_s": 0.5},
    {"user": "mika", "text": "bye", "wait_for_idle": True, "delay_s": 3600},  # the test ends the stream
]


def artifacts() -> Path:
    folder = Path(os.environ.get("SPARK_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screen"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Callable[..., object]]:
    """Headless Chromium windows (closed at the end); skips without chromium/chromedriver."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps installs them as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (requirements/base.txt)")
    from selenium.webdriver.chrome.service import Service

    opened: list[object] = []

    def open_window(width: int, height: int) -> object:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument("--hide-scrollbars")
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        opened.append(driver)
        return driver

    try:
        yield open_window
    finally:
        for driver in opened:
            driver.quit()


def docs_screenshot(source: Path, target: Path) -> None:
    """The README's copy: the same picture in 128 colours (a flat dark UI loses nothing), small
    enough to commit."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=128, dither=Image.Dither.NONE).save(target, optimize=True)


def seed_memory(folder: Path, grpc_url: str) -> str:
    """A fact about mallory, embedded by the served `embed` model and imported before the stream
    (as `memory import` restores a backup); returns its id."""
    from spark_client.memory.cli import _embed_one
    from spark_client.memory.records import MemoryKind, MemoryRecord

    vector = asyncio.run(_embed_one(SEED, grpc_url))
    record = MemoryRecord(SEED, MemoryKind.FACT, user="mallory", importance=0.8, created_at=time.time() - 3600)
    backup = folder.with_name("seed.jsonl")
    backup.write_text(json.dumps(record.to_json() | {"embedding": vector}) + "\n")
    done = subprocess.run(
        [str(SPARK_CLIENT), "memory", "import", str(backup), "--memory-dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=seconds(120),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return record.id


def api(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base}/api/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, client: subprocess.Popen) -> object:
    deadline = time.monotonic() + seconds(timeout_s)
    while time.monotonic() < deadline:
        assert client.poll() is None, f"spark-client exited ({client.returncode}) while waiting for {what}"
        try:
            value = condition()
        except Exception:  # a page still loading, an element not there yet
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# Installed before the overlay's own scripts: records each (piece, words) the caption shows.
CAPTION_RECORDER = """
window.captionStates = [];
new MutationObserver(() => {
  const caption = document.getElementById("caption"), words = document.getElementById("words");
  if (!caption || !words) return;
  const state = [caption.dataset.piece ?? null, words.textContent];
  const last = window.captionStates[window.captionStates.length - 1];
  if (!last || last[0] !== state[0] || last[1] !== state[1]) window.captionStates.push(state);
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).get_attribute("textContent") or ""


def test_overlay_and_panel_in_a_browser_follow_a_live_stream(triton, browser, tmp_path: Path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    script = tmp_path / "chat.jsonl"
    script.write_text("\n".join(json.dumps(line) for line in SCRIPT) + "\n")
    personas = write_personas(tmp_path / "personas", PERSONAS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out_dir = artifacts()
    seed_id = seed_memory(tmp_path / "memory", triton.grpc_url)
    command = [
        str(SPARK_CLIENT),
        "live",
        *("--script", str(script), "--personas", str(personas), "--duo-state", str(tmp_path / "duo.json")),
        *("--triton-url", triton.grpc_url, "--no-playback", "--no-vts", "--wav", str(tmp_path / "session.wav")),
        *("--memory-dir", str(tmp_path / "memory"), "--metrics-jsonl", str(tmp_path / "turns.jsonl")),
        *("--screen-port", str(port)),
    ]
    log_file = (out_dir / "spark-client.log").open("w")
    client = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
    )
    try:
        wait_for(lambda: urllib.request.urlopen(f"{base}/panel", timeout=2).status == 200, 120, "the screen", client)
        overlay = browser(1280, 360)
        overlay.execute_cdp_cmd(  # a transparent page renders transparent, as in OBS
            "Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}}
        )
        overlay.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTION_RECORDER})
        overlay.get(f"{base}/overlay?chat=1&size=36&colors=Spark:ff7eb6,Ember:ffb347&linger=30&words=200")
        panel = browser(1280, 1200)
        panel.get(f"{base}/panel")

        # captions appear when Spark's voice starts, and grow piece by piece with it
        wait_for(lambda: text_of(overlay, "#words").strip(), 240, "the first caption", client)
        caption = overlay.find_element(By.ID, "caption")
        assert caption.get_attribute("data-persona") == "Spark" and text_of(overlay, "#name") == "Spark"
        wait_for(lambda: caption.get_attribute("data-piece") not in (None, "0"), 120, "a second spoken piece", client)
        # every state the caption went through, recorded from the page's load (two reads here race
        # the words: both pieces may be in before the first read)
        states = overlay.execute_script("return window.captionStates")
        second = next(i for i, (piece, _) in enumerate(states) if piece not in (None, "0"))
        first, grown = states[second - 1][1], states[second][1]  # the whole first piece, then the next word
        assert states[second - 1][0] == "0" and first.strip(), states[: second + 1]
        assert grown.startswith(first) and len(grown) > len(first), (first, grown)
        assert text_of(overlay, "#chat .chat-text") == STORY
        overlay.save_screenshot(str(out_dir / "overlay.png"))

        # the panel shows who speaks, to whom, and what; its interrupt stops her on the server
        wait_for(lambda: text_of(panel, "#speaker") == "Spark", 30, "Spark on the panel", client)
        assert text_of(panel, "#chat-answered .text") == STORY
        wait_for(lambda: text_of(panel, "#speaking-text").strip(), 30, "Spark's words on the panel", client)
        cancelled = metric(triton.metrics_url, "spark_requests_cancelled_total")  # llm and tts
        panel.find_element(By.ID, "interrupt").click()
        wait_for(lambda: "interrupted" in text_of(panel, '#turns-list li[data-turn="1"]'), 30, "turn 1 cut", client)
        wait_for(
            lambda: metric(triton.metrics_url, "spark_requests_cancelled_total") >= cancelled + 1,
            30,
            "Spark's requests cancelled on the server",
            client,
        )
        wait_for(lambda: caption.get_attribute("data-ended") == "interrupted", 10, "the caption cut", client)
        assert text_of(overlay, "#words").endswith("—")

        # Ember answers the viewer whose message carries markup: shown as text, never run
        wait_for(lambda: text_of(panel, '#turns-list li[data-turn="2"]'), 240, "Ember's answer", client)
        turn_two = panel.find_element(By.CSS_SELECTOR, '#turns-list li[data-turn="2"]')
        assert MARKUP in (turn_two.find_element(By.CSS_SELECTOR, ".chat").get_attribute("textContent") or "")
        assert text_of(overlay, "#chat .chat-text").startswith(MARKUP)
        for page in (panel, overlay):
            assert page.find_elements(By.CSS_SELECTOR, "main b, .caption b") == []
            assert len(page.find_elements(By.TAG_NAME, "script")) == (3 if page is panel else 2)
            with pytest.raises(NoAlertPresentException):
                page.switch_to.alert  # noqa: B018 - alert(1) never ran

        # timings: both turns charted with their stages; connections and the queue's counts
        timings = panel.find_element(By.ID, "timings")
        wait_for(lambda: timings.get_attribute("data-total2"), 30, "turn 2 in the chart", client)
        assert timings.get_attribute("data-total1")
        wait_for(lambda: "Triton llm" in text_of(panel, "#connections"), 30, "the connections", client)
        assert panel.find_elements(By.CSS_SELECTOR, "#connections li.ok")
        assert text_of(panel, '#queue-counts dd[data-count="answered"]') in ("2", "3")
        assert text_of(panel, '#queue-counts dd[data-count="interrupts"]') == "1"

        # memory: what mika asked is found and shown as text
        panel.find_element(By.ID, "memory-query").send_keys("a story about a dragon")
        panel.find_element(By.ID, "memory-search").click()
        wait_for(lambda: "dragon" in text_of(panel, "#memories").lower(), 30, "a memory found", client)

        # memory watch: the fact recalled for mallory's turn, and mika's story remembered; the
        # fact's forget button removes it from the store and from the list
        seeded = f'#memory-watch li[data-id="{seed_id}"]'
        wait_for(lambda: panel.find_elements(By.CSS_SELECTOR, seeded), 30, "the recalled fact in the watch", client)
        row = panel.find_element(By.CSS_SELECTOR, seeded)
        assert row.get_attribute("data-event") == "recalled" and row.get_attribute("data-turn") == "2"
        assert text_of(panel, f"{seeded} .text") == SEED
        remembered = panel.find_elements(By.CSS_SELECTOR, '#memory-watch li[data-event="remembered"] .text')
        assert any(STORY in (r.get_attribute("textContent") or "") for r in remembered)
        assert seed_id in [m["id"] for m in api(base, "memory/search", {"text": SEED})["memories"]]
        panel.execute_script("arguments[0].scrollIntoView()", row)
        row.find_element(By.CSS_SELECTOR, "button.forget").click()
        wait_for(lambda: not panel.find_elements(By.CSS_SELECTOR, seeded), 30, "the fact gone from the watch", client)
        assert seed_id not in [m["id"] for m in api(base, "memory/search", {"text": SEED})["memories"]]
        assert panel.find_elements(By.CSS_SELECTOR, "#memory-watch li")  # the rest stays

        panel.execute_script("window.scrollTo(0, 0)")
        panel.save_screenshot(str(out_dir / "panel.png"))
        if os.environ.get("SPARK_UPDATE_DOCS_SCREENSHOT") == "1":
            docs_screenshot(out_dir / "panel.png", REPO / "docs" / "screen-panel.png")
    finally:
        if client.poll() is None:
            client.send_signal(signal.SIGINT)
            try:
                client.wait(timeout=seconds(60))
            except subprocess.TimeoutExpired:
                client.kill()
        log_file.close()
    output = (out_dir / "spark-client.log").read_text()
    assert client.returncode == 130, output
    assert "Traceback" not in output, output
