"""``LatencyCorrection``: how much slower than its idle profile the backend runs, as a line in its load.

Profiles are measured on an idle server; under load every latency estimate is optimistic. The correction learns
``ratio = observed / predicted`` latency as a straight line in the backend's load ``x`` (the other sequences in
flight: a best-of-4 request decodes 4): ``ratio(x) = a + b x`` with ``b >= 0``. One object is shared by every
run a pacing object prices (and may be shared between pacing objects on the same backend), so every call that
comes back teaches all of them.

- **Load of a finished call**: the mean number of other sequences in flight while it ran, from the start, end and
  sequences of every call the object was told about (``begin`` / ``end``). The first call of a burst started
  alone but ran beside the whole burst, and counts it. A call not back yet counts the mean sequences per call of
  recent calls (its configuration is chosen after it is priced; half-life ``MIX_HALF_LIFE`` calls, short, since
  the mix of configurations moves with the prices).
- **Load of a call being priced** (``begin`` returns it): the other sequences in flight now, or, when higher,
  the mean load the calls that ended within the last mean call duration ran under. Workflows that run side by
  side start their next calls in a ramp: the first of them finds few others in flight but runs beside all of
  them, as the calls that just ended did. After a burst, a lone call is priced at the burst's load for one call
  duration at most.
- **Prior** (``prior_from_profile``): the backend profile (``measure_profile``) sends ``k`` distinct requests
  at once (8, 16, 32) and keeps ``r(k)``, their mean observed / estimated-alone latency
  (``BackendProfile.concurrent_ratio``): what this correction learns, at load ``k - 1``, queueing and the
  prefill of the others included. The prior line ``ratio(x) = 1 + b0 x`` is the least-squares line through the
  idle point ``(0, 1)`` and the points ``(k - 1, r(k))``, unweighted, so its slope is set by the largest
  loads: a burst's first calls, priced at loads from 0 up, all run beside the whole burst. A profile without
  them (written before) falls back on its decode throughput ``tps(s)`` by sequences decoded at once in one request: one
  sequence's time beside ``s - 1`` others relative to alone, ``r(s) = s tps(1) / tps(s)`` (decode only, so
  optimistic: on the vLLM CPU server ``r(32)`` is 2 where 32 requests at once measured 2.7x and 6.1x).
  Beyond the largest measured load the line goes on (an assumption); a profile that measured fewer than two
  loads, or none of at least ``PRIOR_MIN_SEQUENCES`` sequences, gives no prior (extrapolating a nearly flat
  2..8 to 60 sequences would be a guess).
- **Before any observation** the factor is the prior's ``1 + b0 x`` at the load of the call being priced (1.0
  without a prior): the first calls of a burst are priced knowing the calls already in flight, not those that
  begin after them (they all run beside the whole burst) nor their sequences (1 per call until one came back),
  so they are still underestimated.
- **Fit**: weighted least squares with weights ``1 / ratio**2`` (relative error, what a percentage error
  measures) and exponential forgetting (half-life ``HALF_LIFE`` observations: a slowdown that the load does not
  explain, e.g. another process's traffic on the server, is followed). The line goes through the observations'
  weighted mean ``(x0, y0)``; its slope is shrunk towards an anchor as much as one point on the anchor line with
  a tenth of the observations' weight would. Without a prior the anchor is the line through the idle point
  ``(0, 1)`` (the idle profile is right on an idle backend), at ``x0`` from it; with a prior it is the prior's
  shape scaled through the observations' mean, slope ``y0 b0 / (1 + b0 x0)``, at ``max(x0, 1)`` from it (so
  observations all at no load still extrapolate along the profile). So observations at one load level
  extrapolate along the anchor, a call priced at a load never seen gets a factor, and observations bunched at
  nearly one load cannot tilt the line far from the anchor; the fit at the observations' own load is theirs
  alone, so observations override the prior where they are. Without a prior, observations all at no load
  give their own mean. A negative slope (noise) is refitted as flat: more load never makes the backend faster.
- Nothing is persisted.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING

from adaptive_ttc.errors import ConfigurationError

if TYPE_CHECKING:
    from adaptive_ttc.router.profile import BackendProfile

__all__ = ["HALF_LIFE", "MIX_HALF_LIFE", "PRIOR_MIN_SEQUENCES", "LatencyCorrection", "prior_from_profile"]

HALF_LIFE = 50.0
"""Observations after which an observation weighs half as much in the fit."""
MIX_HALF_LIFE = 8.0
"""Calls after which a call's sequences weigh half as much in the mean sequences per call."""
PRIOR_MIN_SEQUENCES = 16
"""The largest batch a profile must have measured for a prior to be derived from it."""
_ANCHOR = 0.1  # the anchor line pulls the slope as one point on it with a tenth of the observations' weight
_FLOOR = 0.25
_RECENT = 64  # ended calls kept for the load a call being priced meets
_STALE = 10.0  # a call open this many times longer than the slowest one seen is taken as lost (never ended)


class LatencyCorrection:
    """Observed / predicted latency as a line in the backend load, fitted online; shared by runs (module doc).

    Args:
        half_life: observations after which one weighs half as much (``HALF_LIFE``).
        clock: seconds, for the start and end of calls (``time.monotonic``).
        prior: ``(a0, b0)`` of the line ``ratio = a0 + b0 * load`` to use before any observation and to anchor the
            slope on (``prior_from_profile``; ``from_profile`` builds it from a backend profile); ``None``: 1.0
            before any observation, slope anchored on the idle point.
    """

    def __init__(
        self,
        *,
        half_life: float = HALF_LIFE,
        clock: Callable[[], float] = time.monotonic,
        prior: tuple[float, float] | None = None,
    ) -> None:
        if prior is not None and not (
            len(prior) == 2 and all(math.isfinite(v) for v in prior) and prior[0] > 0 and prior[1] >= 0
        ):
            raise ConfigurationError(f"a latency prior is (a0 > 0, b0 >= 0) of ratio = a0 + b0 * load, not {prior!r}")
        self.prior = None if prior is None else (float(prior[0]), float(prior[1]))
        """The prior line ``(a0, b0)``, or ``None``."""
        self._clock = clock
        self._decay: float = 0.5 ** (1.0 / half_life)
        self._mix_decay: float = 0.5 ** (1.0 / MIX_HALF_LIFE)
        self._lock = threading.Lock()
        self._sums = [0.0] * 6  # decayed sums of: 1, w, w x, w x^2, w y, w x y
        self._open: dict[Hashable, float] = {}
        self._closed: list[tuple[float, float, float]] = []  # start, end, sequences
        self._ended: deque[tuple[float, float, float]] = deque(maxlen=_RECENT)  # end, duration, mean load
        self._per_call = [0.0, 0.0]  # decayed sums of calls ended and of their sequences
        self._slowest = 0.0
        self.observed = 0
        """Calls learned from so far."""
        self._squares = 0.0  # decayed sum of squared observation weights (for the effective count)

    @classmethod
    def from_profile(cls, profile: BackendProfile | None, *, half_life: float = HALF_LIFE) -> LatencyCorrection:
        """A correction with the prior ``prior_from_profile(profile)`` (none for no profile or too few points)."""
        return cls(half_life=half_life, prior=prior_from_profile(profile))

    @property
    def averaging_weight(self) -> float:
        """Weight of the newest observation in the fit, ``1 - 0.5 ** (1 / half_life)``: from noise alone, the fitted
        ratio at the observations' load spreads about ``sigma * sqrt(w / (2 - w))`` (``sigma``: one call's)."""
        return 1.0 - self._decay

    @property
    def effective_observations(self) -> float:
        """How many equally weighted observations the fit is worth: ``(sum d^i)**2 / sum d^(2i)`` over the
        forgetting weights ``d^i``; the number of observations at first, ``(2 - w) / w`` in the long run. From noise
        alone the fitted ratio spreads about ``sigma / sqrt(effective_observations)``; 0 before any observation."""
        with self._lock:
            count = self._sums[0]
            return 0.0 if self._squares <= 0 else count * count / self._squares

    @property
    def in_flight(self) -> int:
        """Calls begun and not yet ended."""
        return len(self._open)

    @property
    def sequences_per_call(self) -> float:
        """Mean sequences per call of recent calls (1.0 before any came back): what a call in flight counts."""
        calls, sequences = self._per_call
        return 1.0 if calls <= 0 else sequences / calls

    def load(self) -> float:
        """The sequences in flight now (the calls begun and not ended, at ``sequences_per_call`` each)."""
        with self._lock:
            return len(self._open) * self.sequences_per_call

    def begin(self, call: Hashable) -> float:
        """A call goes to the backend now (again, if ``call`` was already open); returns the load it meets: the
        other sequences in flight, or, when higher, the mean load the calls that ended within the last call
        duration ran under (module doc)."""
        with self._lock:
            now = self._clock()
            self._drop_stale(now)
            self._open.pop(call, None)
            self._open[call] = now
            return max((len(self._open) - 1) * self.sequences_per_call, self._recent_load(now))

    def end(self, call: Hashable, predicted_s: float | None, observed_s: float, *, sequences: float = 1.0) -> None:
        """``call`` came back after ``observed_s``; learn from it (``predicted_s``: its estimate, ``None``: none).

        ``sequences``: what it decoded at once (``n`` of best-of-``n``). A call never begun is learned under the
        load now.
        """
        with self._lock:
            start = self._open.pop(call, None)
            if start is None:
                load = len(self._open) * self.sequences_per_call
            else:
                end = start + max(0.0, observed_s)
                load = self._mean_load(start, end)
                self._closed.append((start, end, sequences))
                self._ended.append((end, end - start, load))
                self._prune()
            calls, total = self._per_call
            self._per_call = [calls * self._mix_decay + 1.0, total * self._mix_decay + sequences]
            if predicted_s is not None:
                self._learn(predicted_s, observed_s, load)

    def abandon(self, calls: Iterable[Hashable]) -> None:
        """These calls will never be ended (their run is over): they ran until now at the latest."""
        with self._lock:
            now = self._clock()
            for call in calls:
                start = self._open.pop(call, None)
                if start is not None:
                    self._closed.append((start, now, self.sequences_per_call))
            self._prune()

    def observe(self, predicted_s: float, observed_s: float, in_flight: float) -> None:
        """Learn from one call: predicted and observed seconds, and the mean other sequences in flight while it
        ran."""
        with self._lock:
            self._learn(predicted_s, observed_s, in_flight)

    def factor(self, in_flight: float | None = None) -> float:
        """What to multiply a latency estimate by at ``in_flight`` other sequences in flight (``None``: ``load()``);
        before any observation the prior's (1.0 without one)."""
        with self._lock:
            x = len(self._open) * self.sequences_per_call if in_flight is None else max(0.0, in_flight)
            fit = self._fit() or self.prior
            return 1.0 if fit is None else max(_FLOOR, fit[0] + fit[1] * x)

    def line(self) -> tuple[float, float] | None:
        """The fitted ``(a, b)`` of ``ratio = a + b * load``; ``None`` before any observation (``prior`` is used
        then)."""
        with self._lock:
            return self._fit()

    # -- internals (under the lock) ---------------------------------------------------------------------------

    def _learn(self, predicted_s: float, observed_s: float, load: float) -> None:
        if not (predicted_s > 0 and observed_s > 0 and math.isfinite(predicted_s + observed_s + load)):
            return
        x, y = max(0.0, load), observed_s / predicted_s
        w = 1.0 / (y * y)
        terms = (1.0, w, w * x, w * x * x, w * y, w * x * y)
        self._sums = [s * self._decay + v for s, v in zip(self._sums, terms, strict=True)]
        self._squares = self._squares * self._decay * self._decay + 1.0
        self._slowest = max(self._slowest, observed_s)
        self.observed += 1

    def _fit(self) -> tuple[float, float] | None:
        """The weighted least-squares line through the observations' weighted mean ``(x0, y0)``, its slope shrunk
        towards the anchor's: ``b = (Sxy + k b1) / (Sxx + k)``. Without a prior ``b1 = (y0 - 1) / x0`` and
        ``k = _ANCHOR * weight * x0**2`` (what one point at ``(0, 1)`` with a tenth of the weight would add); with
        the prior ``(a0, b0)``, ``b1 = y0 b0 / (a0 + b0 x0)`` and ``k = _ANCHOR * weight * max(x0, 1)**2``.
        The fit at the observations' own load is theirs alone; with no spread in load, ``b = b1``."""
        count, sw, swx, swxx, swy, swxy = self._sums
        if count <= 0 or sw <= 0:
            return None
        x0, y0 = swx / sw, swy / sw
        sxx, sxy = max(0.0, swxx - sw * x0 * x0), swxy - sw * x0 * y0
        if self.prior is None:
            k = _ANCHOR * sw * x0 * x0
            anchored = (y0 - 1.0) / x0 if x0 > 0 else 0.0
        else:
            a0, b0 = self.prior
            k = _ANCHOR * sw * max(x0, 1.0) ** 2
            anchored = y0 * b0 / (a0 + b0 * x0)
        slope = (sxy + k * anchored) / (sxx + k) if sxx + k > 1e-12 * sw else 0.0
        slope = max(0.0, slope)  # more load never makes the backend faster
        return y0 - slope * x0, slope

    def _recent_load(self, now: float) -> float:
        """Mean load of the calls that ended within the last mean duration of recent calls (0 when none did)."""
        if not self._ended:
            return 0.0
        window = sum(d for _, d, _ in self._ended) / len(self._ended)
        loads = [load for end, _, load in self._ended if end >= now - window]
        return sum(loads) / len(loads) if loads else 0.0

    def _mean_load(self, start: float, end: float) -> float:
        """Mean other sequences in flight over ``[start, end]`` (calls still open ran through ``end``)."""
        each = self.sequences_per_call
        if end <= start:
            return each * sum(1 for s in self._open.values() if s <= start)
        overlap = sum(n * max(0.0, min(e, end) - max(s, start)) for s, e, n in self._closed)
        overlap += each * sum(max(0.0, end - max(s, start)) for s in self._open.values())
        return overlap / (end - start)

    def _prune(self) -> None:
        """Forget ended calls that cannot overlap any call still open."""
        oldest = min(self._open.values(), default=math.inf)
        self._closed = [c for c in self._closed if c[1] >= oldest]

    def _drop_stale(self, now: float) -> None:
        if self._slowest > 0:
            limit = now - _STALE * self._slowest
            for call in [c for c, s in self._open.items() if s < limit]:
                del self._open[call]
            self._prune()


def prior_from_profile(profile: BackendProfile | None) -> tuple[float, float] | None:
    """The prior line ``(1, b0)`` of ``ratio = 1 + b0 * load`` from a profile (module doc): from its requests sent
    at once when it measured them, else from its decode throughput by batch size; ``None`` without a profile or
    with too few points (fewer than two loads, or none of at least ``PRIOR_MIN_SEQUENCES`` sequences)."""
    if profile is None:
        return None
    points = [(k - 1.0, r) for k, r in profile.concurrent_ratio.items() if k > 1]
    if not _enough(points):
        alone = profile.decode_tokens_per_s.get(1)
        points = [(s - 1.0, s * alone / v) for s, v in profile.decode_tokens_per_s.items() if s > 1] if alone else []
    if not _enough(points):
        return None
    across = sum(x * (r - 1.0) for x, r in points)
    spread = sum(x * x for x, _ in points)
    return 1.0, max(0.0, across / spread)


def _enough(points: list[tuple[float, float]]) -> bool:
    return len(points) >= 2 and max(x for x, _ in points) + 1 >= PRIOR_MIN_SEQUENCES
