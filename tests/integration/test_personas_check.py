"""`spark-client personas check` against the real server and the test VTube Studio: what the
shipped personas refer to is there; a missing voice, adapter or hotkey is named and exits 1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spark_client.personas.files import SHIPPED_DIR

from tests.fakes.vts_server import FakeHotkey
from tests.fakes.vts_thread import VTSThread
from tests.timing import seconds

pytestmark = pytest.mark.server

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")


def check(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SPARK_CLIENT), "personas", "check", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds(120), check=False)


def test_the_shipped_personas_have_their_voices_and_adapters(triton):
    done = check("--triton-url", triton.grpc_url, "--no-vts")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "everything the personas refer to is there" in done.stdout


def test_missing_voice_adapter_and_hotkey_are_named(triton, tmp_path):
    folder = tmp_path / "personas"
    shutil.copytree(SHIPPED_DIR, folder)
    spark = folder / "spark.toml"
    text = spark.read_text().replace('name = "joe"', 'name = "nobody"').replace('name = "spark"', 'name = "nope"')
    spark.write_text(text.replace('model = "Spark"', 'model = "Test Model"'))
    hotkeys = (FakeHotkey("hk-smile", "Smile"), FakeHotkey("hk-sad", "Sad"), FakeHotkey("hk-angry", "Angry"))
    with VTSThread(hotkeys=hotkeys) as vts:
        done = check(
            "--personas",
            str(folder),
            "--triton-url",
            triton.grpc_url,
            "--vts-url",
            vts.server.url,
            "--vts-token-path",
            str(tmp_path / "token"),
        )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Spark: voice 'nobody' is not served" in out and "jf_alpha" in out
    assert "Spark: adapter 'nope'" in out and "unknown LoRA adapter" in out
    assert "Spark: hotkey 'Surprised' (for surprised) is not in model 'Test Model'" in out
    assert "hotkey 'Smile'" not in out and "hotkey 'Sad'" not in out  # those exist
    assert "Ember's model 'Ember' is not loaded" in out
    assert "problem: Ember" not in out


def test_a_broken_file_is_an_error_before_anything_is_asked(tmp_path):
    folder = tmp_path / "personas"
    shutil.copytree(SHIPPED_DIR, folder)
    (folder / "ember.toml").write_text("volume = 11\n" + (folder / "ember.toml").read_text())
    done = check("--personas", str(folder), "--triton-url", "127.0.0.1:1", "--no-vts")
    assert done.returncode == 2
    assert "ember.toml: unknown field volume" in done.stderr
