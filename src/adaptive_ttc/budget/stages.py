"""How much of a run is left (calls and stages), what earlier runs did, and how slow the backend is now.

- ``WorkflowPrior``: the call and stage counts (and token caps) of earlier runs of one workflow, kept in a small
  JSON file. Without ``expected_calls``, the calls still to come are estimated from them: when earlier runs had
  token caps, ``cap / c`` with ``c`` their median cap per call (a budget sized to the workflow tells its length);
  otherwise ``mean(K - started)`` over earlier runs that made more than ``started`` calls (``K`` their call
  counts): a conditional expectation, not a fixed guess.
- ``StageClock``: per run, which stage a call belongs to. A call that starts while others are in flight and
  their stage's time is not over joins that stage and may use its time to its end: parallel calls (LangGraph
  branches, ``Send`` fan-out) share the stage's time rather than each getting a slice of it. Otherwise the call
  opens a new stage, whose time is the seconds left divided by the stages left.
- ``LatencyCorrection`` (``latency.py``, re-exported here): observed / predicted latency as a line in the backend
  load, fitted online from every call that comes back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adaptive_ttc.budget.latency import LatencyCorrection

__all__ = ["LatencyCorrection", "StageClock", "WorkflowPrior"]

PRIOR_RUNS = 50
"""Earlier runs a prior keeps (the most recent)."""


class WorkflowPrior:
    """Call and stage counts of earlier runs of one workflow, persisted in ``path`` (``None``: in memory)."""

    def __init__(self, path: str | Path | None = None, *, keep: int = PRIOR_RUNS) -> None:
        self.path = None if path is None else Path(path)
        self.keep = keep
        self._lock = threading.Lock()
        self.runs: list[tuple[int, int, int]] = []
        if self.path is not None and self.path.exists():
            self.runs = _read_runs(self.path)

    def record(self, calls: int, stages: int, cap: int | None = None) -> None:
        """Remember one finished run (its token cap too, ``None``: none) and save the file."""
        if calls <= 0:
            return
        with self._lock:
            self.runs = [*self.runs, (calls, max(1, min(stages, calls)), max(0, cap or 0))][-self.keep :]
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                temporary = self.path.with_suffix(self.path.suffix + ".tmp")
                temporary.write_text(json.dumps({"runs": [list(r) for r in self.runs]}))
                temporary.replace(self.path)

    def remaining_calls(self, started: int, cap: int | None = None) -> float | None:
        """Expected calls still to come (this one included) after ``started``; ``None`` if no run went further.

        With ``cap`` (this run's token cap) and earlier runs that had caps: ``cap / median cap per call - started``
        while that is at least 1; else the conditional mean over earlier runs longer than ``started``.
        """
        per_call = sorted(c / k for k, _, c in self.runs if c > 0)
        if cap and per_call:
            estimate = cap / per_call[len(per_call) // 2] - started
            if estimate >= 1:
                return estimate
        longer = [calls - started for calls, _, _ in self.runs if calls > started]
        return None if not longer else sum(longer) / len(longer)

    def width(self) -> float | None:
        """Mean calls per stage of earlier runs; ``None`` without any."""
        return None if not self.runs else sum(r[0] for r in self.runs) / sum(r[1] for r in self.runs)


def _read_runs(path: Path) -> list[tuple[int, int, int]]:
    """A prior file's runs (calls, stages, cap; files without caps read as cap 0); a damaged file counts as no
    history (it is only a prior)."""
    try:
        data = json.loads(path.read_text())
        runs = [(int(r[0]), int(r[1]), int(r[2]) if len(r) > 2 else 0) for r in data["runs"]]
        return [r for r in runs if r[0] > 0 and r[1] > 0 and r[2] >= 0]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []


@dataclass
class StageClock:
    """One run's stages (when the current one started, when its time runs out, how many opened) and plans.

    ``planned_*``: what the spend curve expected of each call at its prices, by start order; ``seen``: records
    already learned from; ``opened_at``: the started-call count at which the current stage opened (a re-plan
    of the same call does not open another); ``started``: calls priced so far; ``owner``: a weak reference to the
    run's ledger (dead once the run is over).
    """

    stages: int = 0
    start_s: float = 0.0
    end_s: float | None = None
    calls: int = 0
    planned_tokens: list[float] = field(default_factory=list)
    planned_seconds: list[float] = field(default_factory=list)
    seen: int = 0
    opened_at: int = -1
    started: int = 0
    cap: int | None = None
    owner: Callable[[], object | None] | None = None

    def joins(self, now: float, in_flight: int, least_s: float) -> bool:
        """Whether a call starting at ``now`` joins the current stage (others in flight, ``least_s`` left)."""
        return in_flight > 0 and self.stages > 0 and (self.end_s is None or self.end_s - now >= least_s)

    def open(self, now: float, seconds: float | None) -> None:
        """Open a new stage at ``now`` with ``seconds`` of time (``None``: no deadline)."""
        self.stages += 1
        self.start_s = now
        self.end_s = None if seconds is None else now + seconds
