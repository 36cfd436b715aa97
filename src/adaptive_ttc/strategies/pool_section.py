"""The pool section of a generation log: one request samples a pool; drawing ``n`` of it is replayed by resampling.

See ``log_sections`` for the estimate of accuracy (a soft label over ``resamples`` subsets), tokens and latency.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptive_ttc.answers import extract_answer
from adaptive_ttc.strategies.log_sections import GatherSession, LogSection, Outcome, ReplayContext, candidate_json
from adaptive_ttc.strategies.steps import score_item
from adaptive_ttc.types import Candidate

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration
    from adaptive_ttc.router.profile import BackendProfile

__all__ = ["Choose", "PoolSection"]

Choose = Callable[["Configuration", Sequence[Candidate]], int]
"""A kind's choice among candidates (e.g. best-of-N's selector): the index of the chosen one."""


class PoolSection(LogSection):
    """``pool`` answers sampled in ONE request (scored once when a configuration needs it), shared by the section.

    Args:
        key: the row's key.
        choose: how a configuration picks among a subset of the pool.
        top_logprobs: top log-probabilities per token to request when a scorer needs log-probabilities.
    """

    def __init__(self, key: str, choose: Choose, *, top_logprobs: int) -> None:
        super().__init__(key)
        self.choose = choose
        self.top_logprobs = top_logprobs

    def pooled(self, config: Configuration) -> int:
        return config.n

    async def gather(self, configs: Sequence[Configuration], session: GatherSession) -> dict[str, Any]:
        scorer = session.scorer if any(c.needs_scorer for c in configs) else None
        logprobs = scorer is not None and scorer.needs_logprobs
        request = session.request(
            n=session.pool,
            temperature=session.temperature,
            seed=session.seed("pool"),
            logprobs=logprobs,
            top_logprobs=self.top_logprobs if logprobs else 0,
        )
        start = time.perf_counter()
        (result,) = await session.backend.generate([request])
        latency = time.perf_counter() - start
        answers = [extract_answer(c.text) for c in result.completions]
        scores: list[float | None] = [None] * len(answers)
        score_latency = 0.0
        score_tokens = 0
        if scorer is not None:
            items = [score_item(session.question, c.text, c.logprobs) for c in result.completions]
            start = time.perf_counter()
            scored = await scorer.score(items)
            score_latency = time.perf_counter() - start
            score_tokens = scored.usage.total_tokens
            scores = [s.value for s in scored.scores]
        candidates = [
            {**candidate_json(c, a, session.grade(a)), **({"score": s} if s is not None else {})}
            for c, a, s in zip(result.completions, answers, scores, strict=True)
        ]
        return {
            "latency_s": latency,
            "input_tokens": result.usage.input_tokens,
            "score_latency_s": score_latency,
            "score_tokens": score_tokens,
            "candidates": candidates,
        }

    def replay(self, config: Configuration, row: dict[str, Any], context: ReplayContext) -> Outcome:
        data = row[self.key]
        cands = data["candidates"]
        size, n = len(cands), config.n
        if n > size:
            raise ValueError(f"{config.label} needs {n} pooled answers, the row has {size}")
        candidates = [
            Candidate(
                text="",
                output_tokens=int(c["output_tokens"]),
                finish_reason="stop",
                score=c.get("score"),
                answer=c["answer"],
            )
            for c in cands
        ]
        rng = np.random.default_rng(_subset_seed(context.seed, row["id"], n))
        subsets = (
            [list(range(size))] if n == size else [list(rng.permutation(size)[:n]) for _ in range(context.resamples)]
        )
        correct, output, longest = [], [], []
        for subset in subsets:
            chosen = subset[self.choose(config, [candidates[i] for i in subset])]
            correct.append(float(cands[chosen]["correct"]))
            output.append(sum(candidates[i].output_tokens for i in subset))
            longest.append(max(candidates[i].output_tokens for i in subset))
        input_tokens = float(data["input_tokens"])
        pool = (max(c.output_tokens for c in candidates), size)
        measured = float(data["latency_s"])
        latency = float(np.mean([_latency(measured, context.profile, (input_tokens, lo, n), pool) for lo in longest]))
        scorer_tokens = 0.0
        if config.needs_scorer:
            latency += float(data.get("score_latency_s", 0.0)) * n / size
            scorer_tokens = float(data.get("score_tokens", 0)) * n / size
        return Outcome(
            float(np.mean(correct)),
            input_tokens,
            float(np.mean(output)) + scorer_tokens,
            float(np.mean(longest)),
            latency,
        )

    def progress(self, data: dict[str, Any]) -> str:
        cands = data["candidates"]
        return f"{sum(c['correct'] for c in cands)}/{len(cands)}"


def _latency(
    measured: float, profile: BackendProfile | None, run: tuple[float, float, int], pool: tuple[float, int]
) -> float:
    """Latency of a run (input tokens, longest answer, n) from the pool's measured one and (longest answer, size)."""
    (input_tokens, longest, n), (pool_longest, size) = run, pool
    if profile is None:
        return measured * max(longest, 1.0) / max(pool_longest, 1.0)
    at_n = profile.latency(input_tokens=input_tokens, longest_tokens=longest, sequences=n)
    at_pool = profile.latency(input_tokens=input_tokens, longest_tokens=pool_longest, sequences=size)
    return measured * at_n / max(at_pool, 1e-9)


def _subset_seed(seed: int, question_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{question_id}:{n}".encode()).digest()[:4], "big")
