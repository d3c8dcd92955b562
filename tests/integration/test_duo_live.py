"""The duo end to end: `spark-client live --script` twice against the real server, the shipped
persona files (with a sure, slow co-host), a duo state file shared by the two runs.

Run 1: Spark answers, Ember follows unprompted, no exchange passes the banter cap. Run 2 is a
restart inside Ember's cooldown: she does not chime in (the cooldown survived the restart) but
answers when a viewer names her; counts carry over. Each persona's audio is in its own voice:
the turn records name the voice, and the recordings' pitch tells them apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spark_client.personas.files import SHIPPED_DIR
from spark_client.speech.audio import read_wav

from tests.integration.test_voices import median_f0
from tests.timing import seconds

pytestmark = [pytest.mark.server, pytest.mark.e2e]

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")
SCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "duo"
COOLDOWN_S = 900.0  # longer than the whole test: a restart must not reset it


def personas_for_test(folder: Path) -> Path:
    """The shipped personas, greedy, with a co-host sure to follow when its cooldown allows."""
    shutil.copytree(SHIPPED_DIR, folder)
    for name in ("spark.toml", "ember.toml"):
        path = folder / name
        text = path.read_text().replace("temperature = 0.7", "temperature = 0.0")
        text = text.replace("temperature = 0.8", "temperature = 0.0")
        text = text.replace("interject_probability = 0.35", "interject_probability = 1.0")
        text = text.replace("interject_cooldown_s = 40.0", f"interject_cooldown_s = {COOLDOWN_S}")
        text = text.replace("silence_after_s = 45.0", "silence_after_s = 0.0")
        path.write_text(text)
    assert "interject_probability = 1.0" in (folder / "ember.toml").read_text()
    return folder


def run_live(triton, tmp_path: Path, name: str, personas: Path) -> tuple[list[dict], Path, str]:
    wav, turns = tmp_path / f"{name}.wav", tmp_path / f"{name}.jsonl"
    command = [
        str(SPARK_CLIENT),
        "live",
        "--script",
        str(SCRIPTS / f"{name}.jsonl"),
        "--personas",
        str(personas),
        "--duo-state",
        str(tmp_path / "duo-state.json"),
        "--triton-url",
        triton.grpc_url,
        "--no-playback",
        "--no-vts",
        "--no-memory",
        "--wav",
        str(wav),
        "--metrics-jsonl",
        str(turns),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds(300), check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    records = [json.loads(line) for line in turns.read_text().splitlines() if line.strip()]
    return records, wav, output


def persona_pitch(records: list[dict], wav: Path, persona: str) -> float:
    audio, rate = read_wav(wav)
    parts = [
        audio[int(r["recorded_s"][0] * rate) : int(r["recorded_s"][1] * rate)]
        for r in records
        if r["persona"] == persona and r["recorded_s"]
    ]
    assert parts, f"no audio of {persona} in {wav.name}"
    return median_f0(np.concatenate(parts), rate)


def test_the_duo_takes_turns_keeps_its_cooldowns_across_a_restart_and_speaks_in_two_voices(triton, tmp_path):
    personas = personas_for_test(tmp_path / "personas")

    first, wav1, output = run_live(triton, tmp_path, "run1", personas)
    assert first[0]["persona"] == "Spark" and first[0]["kind"] == "answer", output
    follow = first[1:]
    assert follow and follow[0]["persona"] == "Ember" and follow[0]["kind"] in ("interjection", "banter"), output
    assert len(follow) <= 3, "an exchange past the banter cap"
    assert [r["persona"] for r in follow] == ["Ember", "Spark", "Ember"][: len(follow)]  # they alternate
    for record in first:
        assert record["spoken"] and not record["failed"], record

    second, wav2, output = run_live(triton, tmp_path, "run2", personas)
    # Spark's answer ends long before the next message comes (no chat waits): only the cooldown,
    # restored from the state file, keeps Ember quiet after it
    assert [(r["persona"], r["kind"]) for r in second[:2]] == [("Spark", "answer"), ("Ember", "answer")], output
    assert all(r["kind"] == "banter" for r in second[2:]) and len(second) <= 2 + 3  # Spark may answer her
    state = json.loads((tmp_path / "duo-state.json").read_text())
    assert state["answers"] == {"Spark": 2, "Ember": 1}
    assert state["cooldown_until"]["Ember"] > state["saved_at"]  # still cooling down when the stream ended

    records = [*first, *second]
    assert {r["voice"] for r in records if r["persona"] == "Spark"} == {"joe"}
    assert {r["voice"] for r in records if r["persona"] == "Ember"} == {"jf_alpha"}
    spark = persona_pitch(first, wav1, "Spark")
    ember = persona_pitch(second, wav2, "Ember")
    assert abs(ember - spark) / min(ember, spark) > 0.25, (spark, ember)
