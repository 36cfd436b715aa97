"""Per-question outcomes of every configuration, replayed from a generation log.

- ``greedy`` and beam search: what the logged run did (correct 0/1, its tokens and measured latency).
- Best-of-N at N from a pool of P answers: ``resamples`` random subsets of N answers (without replacement;
  N = P is the whole pool) go through the library's own ``select``; accuracy is the share of subsets whose
  selected answer is correct (a soft label), tokens are input once + the subset's output tokens (mean).
- Best-of-N latency at N cannot be measured from the pool directly: the pool decoded P sequences together,
  and a request of N sequences stops with its longest one. It is estimated as the pool's measured latency
  times ``profile.latency(N, longest of the subset) / profile.latency(P, longest of the pool)``, the profile
  being the backend profile measured before collecting (decode speed per batch size); so N = P gives the
  measured latency back, and the machine's load during that question carries over. Without a profile the
  ratio is ``longest of the subset / longest of the pool`` (per-sequence speed taken as independent of N).
  Scorer time, when a selector needs one, is the pool's scoring time times N / P.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.strategies.best_of_n import select
from adaptive_ttc.strategies.escalate import Escalate
from adaptive_ttc.strategies.escalate_fit import replay
from adaptive_ttc.types import Candidate

__all__ = ["DEFAULT_RESAMPLES", "Outcome", "log_outcomes", "observations", "profile_of"]

DEFAULT_RESAMPLES = 30


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one configuration did (or does in expectation) on one question."""

    accuracy: float
    input_tokens: float
    output_tokens: float
    longest_tokens: float
    latency_s: float
    steps: float = 1.0

    @property
    def tokens(self) -> float:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def profile_of(log: GenerationLog) -> BackendProfile | None:
    """The backend profile stored in the log's header, if any."""
    data = log.header.profile
    if not data:
        return None
    fields = {**data, "decode_tokens_per_s": {int(k): float(v) for k, v in data["decode_tokens_per_s"].items()}}
    return BackendProfile(**fields)


def log_outcomes(
    log: GenerationLog, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, dict[str, Outcome]]:
    """Outcome of every configuration of the log's grid on every logged question (id -> label -> outcome).

    Raises:
        ConfigurationError: a row lacks what a configuration of the header's grid needs (file and line named).
    """
    grid = parse_grid(log.header.grid)
    profile = profile_of(log)
    result: dict[str, dict[str, Outcome]] = {}
    for row, line in zip(log.rows, log.lines, strict=True):
        try:
            result[row["id"]] = {c.label: _outcome(row, c, profile, resamples, seed) for c in grid}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigurationError(f"{log.path}:{line}: row {row.get('id')!r} is incomplete ({exc!r})") from exc
    return result


def _outcome(
    row: dict[str, Any], config: Configuration, profile: BackendProfile | None, resamples: int, seed: int
) -> Outcome:
    if config.kind == "greedy":
        greedy = row["greedy"]
        (cand,) = greedy["candidates"]
        out = float(cand["output_tokens"])
        return Outcome(float(cand["correct"]), float(greedy["input_tokens"]), out, out, float(greedy["latency_s"]))
    if config.kind == "escalate":
        return _escalation(row, config, resamples, seed)
    if config.kind in ("beam", "vllm-beam"):
        beam = row["beams"][config.label]
        chosen = beam["candidates"][beam["selected"]]
        longest = max(float(c["output_tokens"]) for c in beam["candidates"])
        return Outcome(
            float(chosen["correct"]),
            float(beam["input_tokens"]),
            float(beam["output_tokens"]),
            longest,
            float(beam["latency_s"]),
            float(beam["steps"]),
        )
    return _best_of_n(row, config, profile, resamples, seed)


def _escalation(row: dict[str, Any], config: Configuration, resamples: int, seed: int) -> Outcome:
    """Escalation replayed from greedy (with its logged confidence) and the pool (``escalate_fit.replay``)."""
    strategy = config.build()
    if not isinstance(strategy, Escalate):
        raise TypeError(f"{config.label} builds {type(strategy).__name__}, not Escalate")
    played = replay(row, strategy, resamples=resamples, seed=seed)
    return Outcome(played.accuracy, played.input_tokens, played.output_tokens, played.longest_tokens, played.latency_s)


def _best_of_n(
    row: dict[str, Any], config: Configuration, profile: BackendProfile | None, resamples: int, seed: int
) -> Outcome:
    pool = row["pool"]
    cands = pool["candidates"]
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
    rng = np.random.default_rng(_subset_seed(seed, row["id"], n))
    subsets = [list(range(size))] if n == size else [list(rng.permutation(size)[:n]) for _ in range(resamples)]
    correct, output, longest = [], [], []
    for subset in subsets:
        chosen = subset[select([candidates[i] for i in subset], config.selector)]
        correct.append(float(cands[chosen]["correct"]))
        output.append(sum(candidates[i].output_tokens for i in subset))
        longest.append(max(candidates[i].output_tokens for i in subset))
    input_tokens = float(pool["input_tokens"])
    pool_longest = max(c.output_tokens for c in candidates)
    measured = float(pool["latency_s"])
    latency = float(
        np.mean([_latency(measured, profile, (input_tokens, lo, n), (pool_longest, size)) for lo in longest])
    )
    if config.needs_scorer:
        latency += float(pool.get("score_latency_s", 0.0)) * n / size
    scorer_tokens = float(pool.get("score_tokens", 0)) * n / size if config.needs_scorer else 0.0
    return Outcome(
        float(np.mean(correct)),
        input_tokens,
        float(np.mean(output)) + scorer_tokens,
        float(np.mean(longest)),
        latency,
    )


def _latency(
    measured: float, profile: BackendProfile | None, run: tuple[float, float, int], pool: tuple[float, int]
) -> float:
    """Latency of a best-of-N run (input tokens, longest answer, N) from the pool's (longest answer, size)."""
    (input_tokens, longest, n), (pool_longest, size) = run, pool
    if profile is None:
        return measured * max(longest, 1.0) / max(pool_longest, 1.0)
    at_n = profile.latency(input_tokens=input_tokens, longest_tokens=longest, sequences=n)
    at_pool = profile.latency(input_tokens=input_tokens, longest_tokens=pool_longest, sequences=size)
    return measured * at_n / max(at_pool, 1e-9)


def _subset_seed(seed: int, question_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{question_id}:{n}".encode()).digest()[:4], "big")


def observations(
    questions: dict[str, str], outcomes: dict[str, dict[str, Outcome]], ids: Sequence[str]
) -> list[Observation]:
    """Router training rows for the questions ``ids`` (``questions`` maps id to text)."""
    return [
        Observation(
            question=questions[qid],
            configuration=label,
            correct=min(1.0, max(0.0, o.accuracy)),
            input_tokens=o.input_tokens,
            output_tokens=o.output_tokens,
            longest_tokens=o.longest_tokens,
            latency_s=o.latency_s,
            steps=o.steps,
        )
        for qid in ids
        for label, o in outcomes[qid].items()
    ]
