"""Command-line argument errors: a one-line message and a non-zero exit, before anything is sent."""

from __future__ import annotations

import pytest

from adaptive_ttc.cli import EXIT_USAGE, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "", "--backend", "http://127.0.0.1:9/v1", "--model", "m"], "every message is empty"),
        (
            ["generate", "hi", "--backend", "http://127.0.0.1:9/v1", "--model", "m", "--max-tokens", "0"],
            "max_tokens",
        ),
        (["generate", "hi", "--backend", "127.0.0.1:9", "--model", "m"], "http(s) URL"),
        (["generate", "hi", "--backend", "http://127.0.0.1:9/v1", "--strategy", "bon", "--n", "0"], "n >= 1"),
        (
            ["generate", "hi", "--backend", "http://127.0.0.1:9/v1", "--strategy", "bon", "--selector", "x"],
            "selector",
        ),
        (
            ["generate", "hi", "--backend", "http://127.0.0.1:9/v1", "--strategy", "beam", "--width", "3"],
            "divide",
        ),
        (
            ["generate", "hi", "--backend", "http://127.0.0.1:9/v1", "--model", "m", "--strategy", "beam"],
            "--scorer",
        ),
        (["collect", "--dataset", "mixed", "--out", "never-written.jsonl", "--concurrency", "0"], "--concurrency"),
        (["collect", "--dataset", "mixed", "--out", "never-written.jsonl", "--concurrency", "-2"], "got -2"),
        (["profile", "--backend", "http://127.0.0.1:9/v1", "--out", "p.json", "--sequences", "1,0"], "--sequences"),
        (["profile", "--backend", "http://127.0.0.1:9/v1", "--out", "p.json", "--sequences", "none"], "got 'none'"),
        (["profile", "--backend", "http://127.0.0.1:9/v1", "--out", "p.json", "--concurrent", "8,x"], "or 'none'"),
        (["profile", "--backend", "http://127.0.0.1:9/v1", "--out", "p.json", "--decode-tokens", "0"], "got 0"),
    ],
)
def test_bad_arguments_exit_with_usage_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("adaptive-ttc: error:")
    assert message in err
    assert "Traceback" not in err


def test_unknown_strategy_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generate", "hi", "--strategy", "magic"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
