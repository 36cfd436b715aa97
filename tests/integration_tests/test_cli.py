"""The `adaptive-ttc generate` command end to end, against the real vLLM server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adaptive_ttc.cli", "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_generate_greedy_json(vllm_url: str, vllm_model: str) -> None:
    done = run_cli("What is 17 + 25?", "--backend", vllm_url, "--model", vllm_model, "--max-tokens", "32", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["strategy"] == "greedy"
    assert out["text"]
    assert out["usage"]["input_tokens"] > 0
    assert out["usage"]["output_tokens"] == out["candidates"][0]["output_tokens"] > 0
    assert out["latency_s"] > 0
    assert out["model"] == vllm_model


def test_generate_finds_the_only_served_model(vllm_url: str) -> None:
    done = run_cli("Say hi.", "--backend", vllm_url, "--max-tokens", "4", "--json")
    assert done.returncode == 0, done.stderr


def test_generate_unknown_model_fails_cleanly(vllm_url: str) -> None:
    done = run_cli("Say hi.", "--backend", vllm_url, "--model", "nope", "--max-tokens", "4")
    assert done.returncode == 1
    assert "ModelNotFoundError" in done.stderr
    assert "Traceback" not in done.stderr


def test_generate_unreachable_backend_fails_cleanly() -> None:
    done = run_cli("Say hi.", "--backend", "http://127.0.0.1:9/v1", "--model", "m", "--timeout", "5")
    assert done.returncode == 1
    assert "BackendUnavailableError" in done.stderr
    assert "Traceback" not in done.stderr
