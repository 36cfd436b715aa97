"""A call as server-sent events: greedy text as it is generated, then the rest, usage and the decision trace.

The engine starts before the response does: a call that fails before its first piece of text (a budget that
cannot pay, a backend that refuses) is answered with its own HTTP status, like a call that does not stream.
After the first piece, a failure is sent as an ``error`` event (which the OpenAI SDKs raise) and the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from adaptive_ttc.budget import Ledger
from adaptive_ttc.engine import Engine, EngineResult
from adaptive_ttc.errors import AdaptiveTTCError
from adaptive_ttc.server.errors import APIError, from_library_error
from adaptive_ttc.server.responses import Reply, dumps
from adaptive_ttc.server.wire import ChatCall

__all__ = ["EventStream", "start_stream"]

Finisher = Callable[[EngineResult], dict[str, Any]]
"""Builds the decision trace of a finished call (and records it in the access log)."""


class EventStream:
    """The running call and what its events need; ``events()`` is the response body."""

    def __init__(
        self,
        task: asyncio.Task[EngineResult],
        *,
        queue: asyncio.Queue[str | None],
        first: str | None,
        reply: Reply,
        call: ChatCall,
        finish: Finisher,
    ) -> None:
        self.task, self.queue, self.first, self.reply = task, queue, first, reply
        self.call, self.finish = call, finish

    async def events(self) -> AsyncIterator[str]:
        """``data:`` lines: the role, each piece of text, the last chunks, then ``[DONE]``."""
        streamed: list[str] = []
        try:
            yield _event(self.reply.chunk({"role": "assistant", "content": ""}))
            piece: str | None = self.first
            while piece is not None:
                if piece:
                    streamed.append(piece)
                    yield _event(self.reply.chunk({"content": piece}))
                piece = await self.queue.get()
            try:
                out = await self.task
            except AdaptiveTTCError as exc:
                yield _event(from_library_error(exc).body())
                return
            extra = self.finish(out)
            for chunk in self.reply.last_chunks(out, "".join(streamed), extra, include_usage=self.call.include_usage):
                yield _event(chunk)
            yield "data: [DONE]\n\n"
        finally:
            await _stop(self.task)


def _event(data: dict[str, Any]) -> str:
    return f"data: {dumps(data)}\n\n"


async def _stop(task: asyncio.Task[EngineResult]) -> None:
    """Cancel the call if the client went away first (the engine settles the ledger for what it spent)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):  # its outcome was reported already, or nobody is listening
        await task


async def start_stream(
    engine: Engine,
    call: ChatCall,
    *,
    ledger: Ledger | None,
    node: str | None,
    reply: Reply,
    finish: Finisher,
    on_done: Callable[[], None],
) -> EventStream:
    """Start the call and wait for its first piece of text (or its end); raises ``APIError`` if it failed
    before producing any, so the response gets the failure's status. ``on_done`` runs when the call ends
    (finished, failed, or cancelled because the client went away)."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.ensure_future(engine.run(call.request, ledger=ledger, node=node, on_text=queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    task.add_done_callback(lambda _: on_done())
    try:
        first = await queue.get()
    except BaseException:
        await _stop(task)
        raise
    if first is None and task.exception() is not None:
        exc = task.exception()
        if isinstance(exc, AdaptiveTTCError):
            raise from_library_error(exc) from exc
        raise APIError(500, f"{type(exc).__name__}: {exc}", "server_error", "internal_error") from exc
    return EventStream(task, queue=queue, first=first, reply=reply, call=call, finish=finish)
