"""Per-question outcomes of every configuration, replayed from a generation log.

Each configuration is replayed by its kind's log section (``StrategyKind.log_section``; the rules are in
``adaptive_ttc.strategies.log_sections``): greedy and beam search as the logged run did (correct 0/1, its tokens
and measured latency); best-of-N at N by resampling subsets of N from the pool (a soft label, with latency scaled
from the pool's by the backend profile measured before collecting, kept in the log's header).
"""

from __future__ import annotations

from collections.abc import Sequence

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.strategies.log_sections import Outcome, ReplayContext

__all__ = ["DEFAULT_RESAMPLES", "Outcome", "log_outcomes", "observations", "profile_of"]

DEFAULT_RESAMPLES = 30


def profile_of(log: GenerationLog) -> BackendProfile | None:
    """The backend profile stored in the log's header, if any."""
    data = log.header.profile
    if not data:
        return None
    return BackendProfile.from_dict(data, f"in the header of {log.path}")


def log_outcomes(
    log: GenerationLog, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, dict[str, Outcome]]:
    """Outcome of every configuration of the log's grid on every logged question (id -> label -> outcome).

    Raises:
        ConfigurationError: a row lacks what a configuration of the header's grid needs (file and line named).
    """
    grid = parse_grid(log.header.grid)
    context = ReplayContext(resamples=resamples, seed=seed, profile=profile_of(log))
    result: dict[str, dict[str, Outcome]] = {}
    for row, line in zip(log.rows, log.lines, strict=True):
        try:
            result[row["id"]] = {c.label: c.spec.log_section.replay(c, row, context) for c in grid}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigurationError(f"{log.path}:{line}: row {row.get('id')!r} is incomplete ({exc!r})") from exc
    return result


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
