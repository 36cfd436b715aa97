"""The `adaptive-ttc generate` command end to end, against the real vLLM server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_generate_auto_with_router_and_budget(vllm_url: str, tmp_path: Path) -> None:
    from adaptive_ttc.router import Router, parse_grid
    from tests.unit_tests.router.test_router import synthetic_log

    router_file = tmp_path / "router.zip"
    Router(parse_grid(["greedy", "bon-majority-4", "bon-majority-8"])).fit(synthetic_log()).save(router_file)
    done = run_cli(
        "What is 17 + 25?",
        "--backend", vllm_url, "--strategy", "auto", "--router", str(router_file),
        "--budget-tokens", "400", "--max-tokens", "64", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["strategy"] == out["decision"]["configuration"]
    assert out["usage"]["total_tokens"] <= 400
    assert out["decision"]["reserved_tokens"] <= 400
    assert len(out["decision"]["predictions"]) == 3


def test_budget_too_small_for_the_prompt_fails_cleanly(vllm_url: str, vllm_model: str) -> None:
    done = run_cli("What is 17 + 25?", "--backend", vllm_url, "--model", vllm_model, "--budget-tokens", "5")
    assert done.returncode == 1
    assert "BudgetExhausted" in done.stderr


def test_profile_command(vllm_url: str, vllm_model: str, tmp_path: Path) -> None:
    # Fewer points than the defaults: the full profile took over 4 minutes on a slow CPU server.
    out_file = tmp_path / "profile.json"
    done = subprocess.run(
        [sys.executable, "-m", "adaptive_ttc.cli", "profile", "--backend", vllm_url, "--model", vllm_model,
         "--out", str(out_file), "--decode-tokens", "8", "--sequences", "1,4,16", "--concurrent", "4,16"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    from adaptive_ttc.router import BackendProfile

    profile = BackendProfile.load(out_file)
    assert profile.prefill_tokens_per_s > 0
    assert set(profile.decode_tokens_per_s) == {1, 4, 16}
    assert profile.sequence_speed(16) < profile.sequence_speed(1) * 16
    # Requests sent at once run slower than alone: the latency correction's prior comes from these.
    assert set(profile.concurrent_ratio) == {4, 16}
    assert all(ratio > 1.0 for ratio in profile.concurrent_ratio.values())
    from adaptive_ttc.budget.latency import prior_from_profile

    prior = prior_from_profile(profile)
    assert prior is not None
    assert prior[1] > 0
