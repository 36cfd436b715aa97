"""`adaptive-ttc collect --concurrency` end to end, against the real vLLM server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaptive_ttc.eval.log import read_log

pytestmark = pytest.mark.vllm

QUESTIONS = ["What is 2 + 3?", "What is 7 - 4?", "What is 6 * 2?", "What is 9 + 1?"]


def test_collect_two_questions_at_once(vllm_url: str, vllm_model: str, tmp_path: Path) -> None:
    dataset = tmp_path / "questions.jsonl"
    answers = ["5", "3", "12", "10"]
    dataset.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
            for i, (q, a) in enumerate(zip(QUESTIONS, answers, strict=True))
        )
    )
    out = tmp_path / "log.jsonl.gz"
    args = ["--dataset", str(dataset), "--out", str(out), "--backend", vllm_url, "--model", vllm_model]
    args += ["--grid", "greedy,bon-majority-2", "--max-tokens", "16", "--no-profile", "--concurrency", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "adaptive_ttc.cli", "collect", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["collected"] == len(QUESTIONS)
    log = read_log(out)
    assert log.header.settings["concurrency"] == 2
    assert [r["id"] for r in log.rows] == ["q0", "q1", "q2", "q3"]
    for row in log.rows:
        assert row["greedy"]["candidates"][0]["output_tokens"] > 0
        assert len(row["pool"]["candidates"]) == 2
        assert row["pool"]["latency_s"] > 0
