"""Collecting several questions at once: the worker pool, and the warning about latencies measured under load.

``collect --concurrency N`` keeps up to N questions in flight (a server that batches, like vLLM, serves them
together). Their rows are the same as one at a time (each question's requests are seeded from its id), but their
latencies are measured under the load of the others: the log's header records ``settings.concurrency`` and
training a router on such a log warns (``ConcurrentLatencyWarning``).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.log import GenerationLog

__all__ = ["ConcurrentLatencyWarning", "check_concurrency", "run_pool", "warn_if_concurrent"]

T = TypeVar("T")


def check_concurrency(concurrency: int) -> int:
    """``concurrency`` if it is a whole number of questions >= 1.

    Raises:
        ConfigurationError: it is not.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(
            f"--concurrency must be a whole number >= 1 (questions collected at once), got {concurrency!r}"
        )
    return concurrency


async def run_pool(items: Sequence[T], work: Callable[[T], Awaitable[None]], workers: int) -> None:
    """``work`` on every item, in order, ``workers`` at a time; the first error cancels the rest and is raised."""
    queue: Iterator[T] = iter(items)

    async def worker() -> None:
        for item in queue:  # one shared iterator: each worker takes the next item when it is free
            await work(item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(workers, len(items)))]
    try:
        if tasks:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task in finished and (error := task.exception()) is not None:
                    raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ConcurrentLatencyWarning(UserWarning):
    """A log's latencies were measured with several questions in flight (``collect --concurrency`` > 1)."""


def warn_if_concurrent(log: GenerationLog) -> None:
    """Warn (``ConcurrentLatencyWarning``) when ``log`` was collected with concurrency > 1; older logs count as 1."""
    concurrency = int(log.header.setting("concurrency"))
    if concurrency > 1:
        warnings.warn(
            f"{log.path}: collected with --concurrency {concurrency}: its latencies were measured with up to "
            f"{concurrency} questions in flight, so a router trained on it expects slower answers than this "
            "backend gives one workflow alone; collect with --concurrency 1 where latency predictions matter",
            ConcurrentLatencyWarning,
            stacklevel=3,
        )
