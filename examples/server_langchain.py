"""``langchain_openai.ChatOpenAI`` pointed at ``adaptive-ttc serve``, with a workflow budget over HTTP.

Any LangChain code that already uses ``ChatOpenAI`` gets per-call strategy choice by changing ``base_url``.
Start the server first (``adaptive-ttc serve --backend http://127.0.0.1:8000/v1 --port 8080``), then
``ADAPTIVE_TTC_SERVER_URL=http://127.0.0.1:8080/v1 python examples/server_langchain.py``.
"""

from __future__ import annotations

import os

import httpx
from langchain_openai import ChatOpenAI

URL = os.environ.get("ADAPTIVE_TTC_SERVER_URL", "http://127.0.0.1:8080/v1")
API_KEY = os.environ.get("ADAPTIVE_TTC_SERVER_API_KEY", "unused")
MAX_TOKENS = int(os.environ.get("EXAMPLE_MAX_TOKENS", "64"))


def main() -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    model = httpx.get(f"{URL}/models", headers=auth).json()["data"][0]["id"]
    budget = httpx.post(f"{URL}/budgets", json={"tokens": 3000, "seconds": 120}, headers=auth).json()

    llm = ChatOpenAI(
        base_url=URL,
        api_key=API_KEY,
        model=model,
        max_tokens=MAX_TOKENS,
        stream_usage=True,
        default_headers={"X-Adaptive-Budget": budget["id"]},  # every call of this model joins the budget
    )
    answer = llm.invoke("What is 9 + 10? Answer with the number.")
    print(f"invoke: {answer.content!r} usage={answer.usage_metadata}")
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Name a primary colour."))
    print(f"stream: {streamed!r}")

    report = httpx.delete(f"{URL}/budgets/{budget['id']}", headers=auth).json()
    print(f"budget: {report['tokens_spent']} tokens over {len(report['calls'])} calls")


if __name__ == "__main__":
    main()
