"""The deployment template in integrations/langgraph runs against the real vLLM server."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

TEMPLATE = Path(__file__).resolve().parents[2] / "integrations" / "langgraph" / "graph.py"


async def test_langgraph_template(vllm_url: str, vllm_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTIVE_TTC_BASE_URL", vllm_url)
    monkeypatch.setenv("ADAPTIVE_TTC_MODEL", vllm_model)
    spec = importlib.util.spec_from_file_location("template_graph", TEMPLATE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        state = await module.graph.ainvoke({"question": "What is 2 + 2?", "budget_tokens": 300})
    finally:
        module.llm.close()
    assert state["answer"]
    assert 0 < state["tokens_spent"] <= 300
