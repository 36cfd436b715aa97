"""A pydantic-ai agent on ``adaptive-ttc serve``: the agent's calls share one workflow budget.

Start the server first (``adaptive-ttc serve --backend http://127.0.0.1:8000/v1 --port 8080``), then
``ADAPTIVE_TTC_SERVER_URL=http://127.0.0.1:8080/v1 python examples/server_pydantic_ai.py``.
"""

from __future__ import annotations

import os

import httpx
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

URL = os.environ.get("ADAPTIVE_TTC_SERVER_URL", "http://127.0.0.1:8080/v1")
API_KEY = os.environ.get("ADAPTIVE_TTC_SERVER_API_KEY", "unused")
MAX_TOKENS = int(os.environ.get("EXAMPLE_MAX_TOKENS", "64"))


def main() -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    name = httpx.get(f"{URL}/models", headers=auth).json()["data"][0]["id"]
    budget = httpx.post(f"{URL}/budgets", json={"tokens": 3000, "seconds": 120}, headers=auth).json()

    model = OpenAIChatModel(name, provider=OpenAIProvider(base_url=URL, api_key=API_KEY))
    agent = Agent(
        model,
        instructions="Answer in one short sentence.",
        model_settings={
            "max_tokens": MAX_TOKENS,
            "extra_headers": {"X-Adaptive-Budget": budget["id"], "X-Adaptive-Node": "agent"},
        },
    )
    result = agent.run_sync("What is the capital of France?")
    print(f"agent: {result.output!r} usage={result.usage()}")

    report = httpx.delete(f"{URL}/budgets/{budget['id']}", headers=auth).json()
    print(f"budget: {report['tokens_spent']} tokens, by node {report['by_node']}")


if __name__ == "__main__":
    main()
