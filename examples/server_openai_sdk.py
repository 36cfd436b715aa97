"""The official ``openai`` SDK against ``adaptive-ttc serve``: a routed call, a fixed configuration, a budget.

Start the server first (in front of vLLM, or the embedded model):

    adaptive-ttc serve --backend http://127.0.0.1:8000/v1 --port 8080

then ``ADAPTIVE_TTC_SERVER_URL=http://127.0.0.1:8080/v1 python examples/server_openai_sdk.py``.
"""

from __future__ import annotations

import os

from openai import OpenAI

URL = os.environ.get("ADAPTIVE_TTC_SERVER_URL", "http://127.0.0.1:8080/v1")
API_KEY = os.environ.get("ADAPTIVE_TTC_SERVER_API_KEY", "unused")  # the server's --api-key, when it has one
MAX_TOKENS = int(os.environ.get("EXAMPLE_MAX_TOKENS", "64"))


def main() -> None:
    client = OpenAI(base_url=URL, api_key=API_KEY)
    model = client.models.list().data[0].id
    question = [{"role": "user", "content": "What is 12 + 30? Answer with the number."}]

    # 1. Routed (the default): the server picks greedy, best-of-N or beam search for this call.
    routed = client.chat.completions.create(model=model, messages=question, max_tokens=MAX_TOKENS)
    trace = (routed.model_extra or {})["adaptive_ttc"]
    print(f"routed -> {trace['configuration']} ({trace['reason']}): {routed.choices[0].message.content!r}")

    # 2. A fixed configuration: a model-name suffix (or extra_body={"adaptive_ttc": {"strategy": ...}}).
    voted = client.chat.completions.create(model=f"{model}:bon-majority-2", messages=question, max_tokens=MAX_TOKENS)
    print(f"bon-majority-2: {voted.choices[0].message.content!r}, usage {voted.usage}")

    # 3. A workflow budget shared by several calls, each naming its node.
    budget = client.post("/budgets", body={"tokens": 4000, "seconds": 120, "expected_calls": 2}, cast_to=dict)
    headers = {"X-Adaptive-Budget": budget["id"]}
    for node, text in (("planner", "Name one prime number."), ("solver", "What is 7 * 6?")):
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            max_tokens=MAX_TOKENS,
            extra_headers={**headers, "X-Adaptive-Node": node},
        )
        print(f"{node}: {answer.choices[0].message.content!r}")
    report = client.delete(f"/budgets/{budget['id']}", cast_to=dict)
    print(f"budget: {report['tokens_spent']} of {report['tokens_cap']} tokens, by node {report['by_node']}")
    print(f"calls: {[c['configuration'] for c in report['calls']]}")


if __name__ == "__main__":
    main()
