"""The streamer's screen over TLS: with a certificate and key the overlay, the panel, the update
socket and the controls are served over HTTPS/WSS only (a token sent from another machine is not
readable on the network), and a bad pair is refused before the stream starts."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from spark_client.screen.auth import ScreenConfigError, ScreenToken, tls_context

from tests.timing import seconds
from tests.unit.test_screen import SECRET, Served

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool (apt-test.txt)")


def self_signed(folder: Path, name: str = "screen") -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_with_a_certificate_everything_is_served_over_tls_only(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))  # the client trusts this one certificate

    async def scenario():
        async with (
            Served(host="127.0.0.1", token=ScreenToken(SECRET), tls=tls_context(cert, key)) as s,
            aiohttp.ClientSession() as http,
        ):
            assert s.server.url.startswith("https://127.0.0.1:")
            base = s.server.url
            results = {"page": (await http.get(f"{base}/panel", ssl=trust)).status}
            results["control"] = (
                await http.post(f"{base}/api/interrupt", json={}, headers={"X-Spark-Token": SECRET}, ssl=trust)
            ).status
            wss = base.replace("https://", "wss://")
            async with http.ws_connect(f"{wss}/ws?token={SECRET}", ssl=trust) as ws:
                results["ws"] = json.loads((await ws.receive(timeout=seconds(5))).data)["type"]
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the same port gets no answer
                await http.get(base.replace("https://", "http://") + "/panel", timeout=aiohttp.ClientTimeout(10))
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # and the certificate is checked
                await http.get(f"{base}/panel")
            return s, results

    s, results = asyncio.run(scenario())
    assert results == {"page": 200, "control": 200, "ws": "queue"}
    assert s.queue.counts["interrupts"] == 1


def test_a_bad_pair_is_refused_with_the_reason(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    other_cert, other_key = self_signed(tmp_path, "other")
    assert tls_context(None, None) is None
    with pytest.raises(ScreenConfigError, match="give both or neither"):
        tls_context(cert, None)
    with pytest.raises(ScreenConfigError, match="no such file"):
        tls_context(tmp_path / "missing.crt", key)
    with pytest.raises(ScreenConfigError, match="cannot use screen.crt with other.key"):
        tls_context(cert, other_key)
    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    with pytest.raises(ScreenConfigError, match="for TLS"):
        tls_context(tmp_path / "garbage.crt", key)
    key_text = key.read_text()
    try:
        tls_context(other_cert, key)
    except ScreenConfigError as exc:
        assert key_text.splitlines()[1] not in str(exc)  # the key's contents never show


def test_the_command_line_takes_both_files_or_says_what_is_missing(tmp_path: Path, monkeypatch):
    from spark_client.cli import app
    from typer.testing import CliRunner

    monkeypatch.delenv("SPARK_SCREEN_TOKEN", raising=False)
    cert, _ = self_signed(tmp_path)
    result = CliRunner().invoke(app, ["live", "--screen-tls-cert", str(cert), "--no-console"])
    assert result.exit_code == 2 and "give both or neither" in result.output
