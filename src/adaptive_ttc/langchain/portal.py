"""One event loop, on its own thread, that owns a chat model's backend connections.

An ``httpx.AsyncClient`` belongs to the loop it was first used on. LangChain calls a chat model from many
loops and threads (``invoke`` in worker threads, ``ainvoke`` in the caller's loop, LangGraph's sync nodes
on a pool), so every backend call is sent to this one loop: the sync path blocks on the future, the async
path awaits it (and cancelling the awaiting task cancels the work on the portal).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["Portal"]

T = TypeVar("T")


class Portal:
    """A daemon thread running an asyncio loop; coroutines are submitted to it from anywhere."""

    def __init__(self, name: str = "adaptive-ttc") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the portal and block until it finishes (the sync path)."""
        loop = self._running_loop()
        if _current_loop() is loop:
            coroutine.close()
            raise RuntimeError("a blocking call was made from the portal's own loop; use the async API there")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or any exit) in the waiting thread cancels the work, so the ledger settles right away.
            future.cancel()
            raise

    async def acall(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the portal and await it from the caller's loop (the async path)."""
        loop = self._running_loop()
        if _current_loop() is loop:
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))

    def iterate(self, generator: AsyncGenerator[T, None]) -> Iterator[T]:
        """Run an async generator on the portal and yield its items here (the sync path of a stream).

        Stopping early (``break``, an exception, Ctrl-C) closes the generator on the portal.
        """
        try:
            while not isinstance(item := self.call(_next(generator)), _End):
                yield item
        finally:
            with contextlib.suppress(Exception):  # already finished, or still running a cancelled step
                self.call(_close(generator))

    async def aiterate(self, generator: AsyncGenerator[T, None]) -> AsyncIterator[T]:
        """Run an async generator on the portal and yield its items on the caller's loop."""
        try:
            while not isinstance(item := await self.acall(_next(generator)), _End):
                yield item
        finally:
            with contextlib.suppress(Exception):
                await self.acall(_close(generator))

    def close(self) -> None:
        """Stop the loop; later calls start a new one."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)


class _End:
    """Marks the end of a generator driven through the portal (StopAsyncIteration cannot cross a future)."""


async def _next(generator: AsyncGenerator[T, None]) -> T | _End:
    try:
        return await anext(generator)
    except StopAsyncIteration:
        return _End()


async def _close(generator: AsyncGenerator[Any, None]) -> None:
    await generator.aclose()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop until ``close`` stops it, then cancel what is left and close it (no leaked sockets)."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
