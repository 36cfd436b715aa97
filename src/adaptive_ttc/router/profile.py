"""Backend profiles: measured prefill/decode speed, overheads and scorer time, for latency estimates.

The measuring itself (requests to a backend) is ``adaptive_ttc.backends.profiling.measure_profile``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from adaptive_ttc.errors import ConfigurationError

__all__ = ["BackendProfile"]

PROFILE_FORMAT = "adaptive-ttc-profile"
PROFILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class BackendProfile:
    """How fast a backend is, as measured on it.

    Attributes:
        backend: what was measured (a URL or ``embedded``).
        model: the served model.
        request_overhead_s: time of a request that prefills little and decodes one token.
        prefill_tokens_per_s: prompt tokens processed per second.
        decode_tokens_per_s: total generated tokens per second, by the number of sequences decoded at once.
        step_overhead_s: extra time per beam-search step beyond its request (scoring and bookkeeping).
        scorer_s_per_item: scorer time per scored item (0 for reward-free scorers).
        concurrent_ratio: by ``k``, the mean over ``k`` requests sent at once of observed / estimated latency
            (each estimated by this profile as if alone): how much a request slows beside ``k - 1`` others
            (the latency correction's prior, ``budget.latency.prior_from_profile``). Empty when not measured
            (profiles written before it).
    """

    backend: str
    model: str
    request_overhead_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: Mapping[int, float]
    step_overhead_s: float = 0.0
    scorer_s_per_item: float = 0.0
    measured_at: float = field(default_factory=time.time)
    concurrent_ratio: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ratios = {int(k): float(v) for k, v in self.concurrent_ratio.items()}  # JSON keys are strings
        if any(k < 1 or not (math.isfinite(v) and v > 0) for k, v in ratios.items()):
            raise ConfigurationError("concurrent_ratio needs request counts >= 1 and finite positive ratios")
        object.__setattr__(self, "concurrent_ratio", ratios)
        if not self.decode_tokens_per_s or any(v <= 0 for v in self.decode_tokens_per_s.values()):
            raise ConfigurationError("decode_tokens_per_s needs at least one positive measurement")
        if self.prefill_tokens_per_s <= 0 or self.request_overhead_s < 0:
            raise ConfigurationError("prefill_tokens_per_s must be > 0 and request_overhead_s >= 0")

    def sequence_speed(self, sequences: int) -> float:
        """Tokens per second of ONE sequence when ``sequences`` decode together (log-linear interpolation)."""
        points = sorted(self.decode_tokens_per_s.items())
        x = math.log2(max(1, sequences))
        if x <= math.log2(points[0][0]):
            total = points[0][1] * sequences / points[0][0]
        elif x >= math.log2(points[-1][0]):
            total = points[-1][1]  # beyond the largest measured batch, assume throughput has saturated
        else:
            (n0, v0), (n1, v1) = next((a, b) for a, b in pairwise(points) if a[0] <= sequences <= b[0])
            t = (x - math.log2(n0)) / (math.log2(n1) - math.log2(n0))
            total = v0 + t * (v1 - v0)
        return total / max(1, sequences)

    def latency(self, *, input_tokens: float, longest_tokens: float, sequences: int, steps: float = 1.0) -> float:
        """Estimated seconds of a strategy run: per-step overheads, prefill, decode of the longest sequence."""
        per_step = self.request_overhead_s + self.step_overhead_s * (steps > 1)
        scoring = self.scorer_s_per_item * sequences * steps if steps > 1 else 0.0
        return (
            steps * per_step
            + input_tokens / self.prefill_tokens_per_s
            + longest_tokens / self.sequence_speed(sequences)
            + scoring
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON data (the counts that key the per-batch mappings as strings): what ``from_dict``
        reads, and what ``save``, a router file and a generation log's header store."""
        data = asdict(self)
        data["decode_tokens_per_s"] = {str(k): v for k, v in self.decode_tokens_per_s.items()}
        data["concurrent_ratio"] = {str(k): v for k, v in self.concurrent_ratio.items()}
        return data

    def save(self, path: str | Path) -> None:
        """Write the profile as versioned JSON."""
        data = self.to_dict()
        Path(path).write_text(json.dumps({"format": PROFILE_FORMAT, "version": PROFILE_VERSION, **data}, indent=2))

    @staticmethod
    def load(path: str | Path) -> BackendProfile:
        """Read a profile written by ``save``; a foreign or newer file is a ``ConfigurationError``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read backend profile {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path} is not an adaptive-ttc profile (it holds no JSON object)")
        if data.pop("format", None) != PROFILE_FORMAT or data.pop("version", None) != PROFILE_VERSION:
            raise ConfigurationError(
                f"{path} is not an adaptive-ttc profile of version {PROFILE_VERSION}; "
                "measure it again with `adaptive-ttc profile`"
            )
        return BackendProfile.from_dict(data, str(path))

    @staticmethod
    def from_dict(data: Mapping[str, Any], source: str) -> BackendProfile:
        """A profile from its fields (as ``save`` writes them, or as a generation log's header holds them)."""
        fields = dict(data)
        try:
            fields["decode_tokens_per_s"] = {int(k): float(v) for k, v in fields["decode_tokens_per_s"].items()}
            numbers = ("request_overhead_s", "prefill_tokens_per_s", "step_overhead_s", "scorer_s_per_item")
            for key in numbers:
                if key in fields:
                    fields[key] = float(fields[key])
            profile = BackendProfile(**fields)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise ConfigurationError(f"backend profile {source} is damaged ({type(exc).__name__}: {exc})") from exc
        if not all(math.isfinite(v) for v in (profile.prefill_tokens_per_s, profile.request_overhead_s)):
            raise ConfigurationError(f"backend profile {source} holds non-finite speeds; measure it again")
        return profile
