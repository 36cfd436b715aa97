"""``adaptive-ttc serve``: its flags, and the refusal to listen beyond loopback without a key."""

from __future__ import annotations

import pytest

from adaptive_ttc.cli import EXIT_USAGE, main
from adaptive_ttc.server.command import is_loopback


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.org"])
def test_serve_refuses_to_listen_beyond_loopback_without_a_key(
    host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADAPTIVE_TTC_SERVER_API_KEY", raising=False)
    argv = ["serve", "--backend", "http://127.0.0.1:9/v1", "--model", "m", "--host", host, "--port", "1"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--api-key" in err
    assert "Traceback" not in err


def test_serve_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--backend", "--model", "--host", "--port", "--router", "--api-key"):
        assert flag in out
