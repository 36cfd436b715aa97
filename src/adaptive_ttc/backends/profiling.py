"""Measure a backend's speed (overhead, prefill, decode at several batch sizes, requests at once) into a
``BackendProfile``."""

from __future__ import annotations

import dataclasses
import statistics

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.types import GenerationRequest, Message

__all__ = ["check_profile_settings", "measure_profile"]

_LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper who counts ships. " * 12
_DECODE_PROMPT = "Count slowly from one to two hundred in words, one number per line."


def check_profile_settings(sequences: tuple[int, ...], concurrent: tuple[int, ...], decode_tokens: int) -> None:
    """Raise ``ConfigurationError`` unless there is a batch size, every count is >= 1 and ``decode_tokens >= 1``."""
    if not sequences or min(sequences) < 1 or min(concurrent, default=1) < 1:
        raise ConfigurationError(
            f"a profile needs at least one batch size, and batch sizes and request counts >= 1; got sequences="
            f"{sequences}, concurrent={concurrent}"
        )
    if decode_tokens < 1:
        raise ConfigurationError(f"decode tokens must be >= 1, got {decode_tokens}")


async def measure_profile(
    backend: Backend,
    label: str,
    *,
    sequences: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    concurrent: tuple[int, ...] = (8, 16, 32),
    decode_tokens: int = 64,
) -> BackendProfile:
    """Measure a backend: overhead (1 token), prefill (a long prompt, 1 token), decode at several batch sizes
    (``sequences``: one request with ``n`` of each), then ``concurrent``: that many distinct requests sent at once.

    The batches go up to 32 sequences: the largest best-of-N of the default grid is 16, and the latency
    correction's prior (``budget.latency.prior_from_profile``) needs the backend at the loads concurrent
    workflows put on it; the requests sent at once measure that whole (queueing, the prefill of the others),
    not only the decode throughput."""
    check_profile_settings(sequences, concurrent, decode_tokens)
    tiny = GenerationRequest(messages=(Message("user", "Hi"),), max_tokens=1)
    await backend.generate([tiny])  # warm-up
    overhead = (await backend.generate([tiny]))[0].latency_s
    long = (await backend.generate([GenerationRequest(messages=(Message("user", _LONG_PROMPT),), max_tokens=1)]))[0]
    prefill = long.usage.input_tokens / max(1e-6, long.latency_s - overhead)
    speeds: dict[int, float] = {}
    for n in sequences:
        request = GenerationRequest(
            messages=(Message("user", _DECODE_PROMPT),),
            n=n,
            temperature=0.8 if n > 1 else 0.0,
            max_tokens=decode_tokens,
            seed=0,
        )
        (result,) = await backend.generate([request])
        longest = max(c.output_tokens for c in result.completions)
        decode_s = max(1e-6, result.latency_s - overhead)
        speeds[n] = longest * n / decode_s
    profile = BackendProfile(
        backend=label,
        model=backend.model,
        request_overhead_s=overhead,
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=speeds,
    )
    ratios = {k: await _concurrent_ratio(backend, profile, k, decode_tokens) for k in concurrent}
    return dataclasses.replace(profile, concurrent_ratio=ratios)


async def _concurrent_ratio(backend: Backend, profile: BackendProfile, count: int, decode_tokens: int) -> float:
    """Mean observed / estimated-alone latency of ``count`` distinct requests (no shared prefix) sent at once."""
    requests = [
        GenerationRequest(messages=(Message("user", f"{i}. {_DECODE_PROMPT}"),), max_tokens=decode_tokens)
        for i in range(count)
    ]
    results = await backend.generate(requests)
    return statistics.fmean(
        r.latency_s
        / profile.latency(
            input_tokens=r.usage.input_tokens,
            longest_tokens=max(c.output_tokens for c in r.completions),
            sequences=1,
        )
        for r in results
    )
