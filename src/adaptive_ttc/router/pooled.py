"""Model-signal features from a vLLM pooling deployment of the policy model (the probe input, served).

``PooledStateFeatures`` asks a vLLM server that runs the policy model as a pooling model for the mean of its
last hidden states over the prompt, as the chat template puts it: the same signal ``hidden.HiddenStateFeatures``
takes in-process from the packaged model, for routers that serve a vLLM backend. The deployment (one more vLLM
process on the policy model's weights)::

    vllm serve MODEL --runner pooling --convert embed \\
        --pooler-config '{"seq_pooling_type": "MEAN", "use_activation": false}'

A router trained with ``--features pooled`` records only the name ``pooled``; where it runs, the deployment is
found from ``$ADAPTIVE_TTC_POOLING_URL`` (its ``/v1`` base URL) and ``$ADAPTIVE_TTC_POOLING_MODEL`` (the served
name; default: the only model it serves), with ``$ADAPTIVE_TTC_API_KEY`` as the bearer token if set. One request
per new question text (``/v1/embeddings`` with chat ``messages``; memoised per text); it blocks the caller for a
prefill, as the in-process hidden state does.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import numpy as np

from adaptive_ttc.errors import BackendError, ConfigurationError
from adaptive_ttc.router.features import Matrix, MemoisedFeatures

__all__ = ["ENV_POOLING_MODEL", "ENV_POOLING_URL", "POOLED", "PooledStateFeatures"]

POOLED = "pooled"
ENV_POOLING_URL = "ADAPTIVE_TTC_POOLING_URL"
ENV_POOLING_MODEL = "ADAPTIVE_TTC_POOLING_MODEL"


class PooledStateFeatures(MemoisedFeatures):
    """Mean-pooled last hidden states of the policy model, from a vLLM pooling server.

    Args:
        base_url: the pooling server's OpenAI-compatible base URL (``http://host:port/v1``); default
            ``$ADAPTIVE_TTC_POOLING_URL``.
        model: the served model name; default ``$ADAPTIVE_TTC_POOLING_MODEL``, else the only one served.
        api_key: bearer token (default ``$ADAPTIVE_TTC_API_KEY``).
        timeout: seconds one request may take.

    Raises:
        ConfigurationError: no URL given or set.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__()
        url = base_url or os.environ.get(ENV_POOLING_URL)
        if not url:
            raise ConfigurationError(
                f"'{POOLED}' features come from a vLLM pooling deployment of the policy model: start one "
                f"(vllm serve MODEL --runner pooling --convert embed) and set {ENV_POOLING_URL}=http://HOST:PORT/v1"
            )
        self.base_url = url.rstrip("/")
        self._model = model or os.environ.get(ENV_POOLING_MODEL) or None
        key = api_key or os.environ.get("ADAPTIVE_TTC_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._timeout = timeout

    @property
    def name(self) -> str:
        return POOLED

    def _width(self) -> int:
        return int(self._row("?").size)

    def _compute(self, text: str) -> Matrix:
        body = {
            "model": self._served_model(),
            "messages": [{"role": "user", "content": text}],
            "add_generation_prompt": True,
            "encoding_format": "float",
        }
        data = self._post("/embeddings", body)
        try:
            vector = np.asarray(data["data"][0]["embedding"], dtype=np.float64)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"the pooling server at {self.base_url} answered without an embedding: {exc}") from exc
        if vector.ndim != 1 or not vector.size or (self._dim is not None and vector.size != self._dim):
            raise BackendError(
                f"the pooling server at {self.base_url} returned a vector of shape {vector.shape}, expected "
                f"({self._dim or 'n'},): is it a pooling deployment with seq_pooling_type MEAN?"
            )
        self._dim = int(vector.size)
        return vector

    def _served_model(self) -> str:
        if self._model is None:
            served = [m.get("id") for m in self._get("/models").get("data", [])]
            if len(served) != 1 or not isinstance(served[0], str):
                raise ConfigurationError(
                    f"the pooling server at {self.base_url} serves {served}; set {ENV_POOLING_MODEL} to one of them"
                )
            self._model = served[0]
        return self._model

    def _get(self, path: str) -> dict[str, Any]:
        return self._answer("GET", path, None)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._answer("POST", path, body)

    def _answer(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One request on its own connection (a router can live as long as the process: nothing is left open)."""
        try:
            with httpx.Client(base_url=self.base_url, timeout=self._timeout, headers=self._headers) as client:
                response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"the pooling server at {self.base_url} could not be reached: {exc}") from exc
        if response.status_code != 200:
            raise BackendError(
                f"the pooling server at {self.base_url} answered HTTP {response.status_code}: "
                f"{response.text[:300]} (is it started with --runner pooling --convert embed?)"
            )
        data: dict[str, Any] = response.json()
        return data
