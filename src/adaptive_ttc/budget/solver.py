"""Prices that spend what is left: the spend curve inverted, with a correction by what was really spent.

Given a call's share of what is left (tokens per remaining call, seconds per remaining stage), ``solve`` finds
the lowest token price at which the router's mean spend per call (``SpendCurve``, measured on its training
questions) is at most that share, and likewise the lowest latency price for time. Two rules keep it honest:
- spend only where it paid on the training data: the token price never goes below the highest price that
  reaches (within ``ACCURACY_TOLERANCE``) the curve's best training accuracy; a lower price buys nothing there;
- a run's real spending corrects the curve: ``ratio`` = (spent + prior) / (planned + prior), the integral of
  its errors so far; the curve is scaled by it before it is inverted (dual ascent on the budget constraint).
There is no fixed floor or ceiling on the prices: beyond the grid they are extrapolated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adaptive_ttc.router.spend import Grid, SpendCurve

__all__ = ["ACCURACY_TOLERANCE", "SolvedPrices", "expected_spend", "solve"]

ACCURACY_TOLERANCE = 0.002
"""Training accuracy within this of the curve's best counts as the best (lower prices buy nothing)."""


@dataclass(frozen=True, slots=True)
class SolvedPrices:
    """A token price and a latency price, with the mean spend per call the curve expects at them."""

    tokens: float
    latency: float
    tokens_per_call: float
    seconds_per_call: float


def _position(prices: tuple[float, ...], price: float) -> float:
    """Fractional index of ``price`` on an ascending grid whose first price is 0 (log-spaced after it)."""
    if price <= 0:
        return 0.0
    first = prices[1]
    if price <= first:
        return float(price / first)
    logs = np.log(prices[1:])
    return 1.0 + float(np.interp(math.log(price), logs, np.arange(len(logs))))


def _price_at(prices: tuple[float, ...], position: float) -> float:
    """Inverse of ``_position`` (extrapolated geometrically past the last price)."""
    if position <= 1.0:
        return max(0.0, position) * prices[1]
    last = len(prices) - 1
    if position >= last:
        step = prices[-1] / prices[-2]
        return float(prices[-1] * step ** (position - last))
    low = int(position)
    return float(prices[low] * (prices[low + 1] / prices[low]) ** (position - low))


def _row(values: Grid, position: float, axis: int) -> Grid:
    """``values`` interpolated at a fractional index along ``axis`` (0: token prices, 1: latency prices)."""
    size = values.shape[axis]
    low = min(int(position), size - 1)
    high = min(low + 1, size - 1)
    frac = min(max(position - low, 0.0), 1.0)
    take = np.take(values, low, axis=axis), np.take(values, high, axis=axis)
    return np.asarray((1 - frac) * take[0] + frac * take[1], dtype=np.float64)


def _invert(values: Grid, target: float) -> float:
    """Lowest fractional index where the non-increasing ``values`` drop to ``target`` (linear in between)."""
    below = np.nonzero(values <= target)[0]
    if len(below) == 0:
        # past the grid: extrapolate one grid step per halving of the overspend
        return float(len(values) - 1 + math.log2(max(values[-1], 1e-12) / max(target, 1e-12)))
    i = int(below[0])
    if i == 0:
        return 0.0
    span = values[i - 1] - values[i]
    return float(i - 1 + (values[i - 1] - target) / span) if span > 0 else float(i)


def _accuracy_floor(curve: SpendCurve, latency_position: float) -> float:
    """Highest token-price index whose training accuracy is within the tolerance of the best."""
    accuracy = _row(curve.array("accuracy"), latency_position, axis=1)
    good = np.nonzero(accuracy >= accuracy.max() - ACCURACY_TOLERANCE)[0]
    return float(good[-1])


def solve(
    curve: SpendCurve,
    tokens_per_call: float | None,
    seconds_per_call: float | None,
    *,
    token_ratio: float = 1.0,
    time_ratio: float = 1.0,
) -> SolvedPrices:
    """The prices at which the expected spend per call matches the shares (``None``: no limit, price 0).

    ``token_ratio`` / ``time_ratio``: real spend over the curve's expectation so far in this run (see the module
    docstring); the curve is scaled by them before it is inverted.
    """
    tokens, seconds = curve.array("tokens") * token_ratio, curve.array("seconds") * time_ratio
    token_pos = latency_pos = 0.0
    for _ in range(3):  # the two prices interact a little: alternate until they settle
        floor = _accuracy_floor(curve, latency_pos)
        if tokens_per_call is not None:
            token_pos = max(floor, _invert(_row(tokens, latency_pos, axis=1), tokens_per_call))
        else:
            token_pos = floor
        if seconds_per_call is not None:
            latency_pos = _invert(_row(seconds, token_pos, axis=0), seconds_per_call)
    spend_t = float(np.interp(latency_pos, np.arange(tokens.shape[1]), _row(tokens, token_pos, 0)))
    spend_s = float(np.interp(latency_pos, np.arange(seconds.shape[1]), _row(seconds, token_pos, 0)))
    return SolvedPrices(
        _price_at(curve.token_prices, token_pos), _price_at(curve.latency_prices, latency_pos), spend_t, spend_s
    )


def expected_spend(curve: SpendCurve, token_price: float, latency_price: float) -> tuple[float, float]:
    """Mean (tokens, seconds) per call the curve expects at these prices."""
    i, j = _position(curve.token_prices, token_price), _position(curve.latency_prices, latency_price)
    tokens = _row(curve.array("tokens"), i, axis=0)
    seconds = _row(curve.array("seconds"), i, axis=0)
    axis = np.arange(len(tokens))
    return float(np.interp(j, axis, tokens)), float(np.interp(j, axis, seconds))
