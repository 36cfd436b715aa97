"""A fault-injecting OpenAI-compatible server for tests, on loopback, in a thread.

Two parts:

- ``OpenAIApp``, an ASGI app speaking the OpenAI-compatible API (``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/models`` and vLLM's ``/tokenize``). It answers from a script (one token per word, like ``FakeBackend``),
  or forwards to a real server (``upstream=``, e.g. the vLLM CPU server), and applies the next queued ``Fault``
  to each generation request.
- ``LoopbackServer``, a minimal HTTP/1.1 server (h11) that serves an ASGI app on 127.0.0.1 from a daemon
  thread. Besides ASGI's messages it takes ``{"type": "fault.abort"}``: reset the connection at once (RST),
  which plain ASGI cannot express.

``FaultServer`` puts them together; a fixture starts it, pushes faults, and reads what the server saw.

A request with ``"stream": true`` gets the same answer as server-sent events (one event per word, then the
finish reason, the usage and ``[DONE]``), with the fault applied to the stream: ``truncate`` resets after half
the events, ``stall`` pauses there, ``drip`` sends events ``delay_s`` apart, ``malformed`` sends an unreadable
event, a processed ``status`` fault sends an error event after half the text, ``no_usage`` leaves out the usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import h11
import httpx

__all__ = ["DEFAULT_ANSWER", "Fault", "FaultServer", "LoopbackServer", "OpenAIApp", "Received", "Served"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FaultKind = Literal[
    "ok",  # answer normally
    "status",  # answer with HTTP ``status`` (429, 500, 503...), a JSON error body, and ``Retry-After`` if set
    "reset",  # reset the connection before answering (the server never processed the request)
    "truncate",  # send the headers and half the body, then reset (the server did the work)
    "stall",  # send the headers and half the body, then go silent for ``delay_s`` before the rest
    "slow",  # wait ``delay_s``, then answer
    "drip",  # send the body a few bytes at a time, ``delay_s`` apart
    "malformed",  # answer 200 with a body that is not JSON
    "wrong_n",  # answer with ``choices`` choices instead of the ``n`` asked for
    "no_usage",  # answer without ``usage`` (and without token ids unless ``keep_ids``)
]

DEFAULT_ANSWER = "The answer is 42."
_ERROR_TYPES = {429: "RateLimitError", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class Fault:
    """What to do to one generation request (see ``FaultKind``)."""

    kind: FaultKind = "ok"
    status: int = 500
    delay_s: float = 0.0
    choices: int = 1
    retry_after: float | None = None
    processed: bool = False  # a ``status`` fault: the server generated before failing (it consumed tokens)
    usage_in_error: bool = False  # a ``status`` fault of a processed request: the error body reports usage
    keep_ids: bool = False  # a ``no_usage`` fault: keep the choices' token ids


@dataclass(frozen=True)
class Received:
    """One request as the server received it: its path, headers (lower-case names) and JSON body."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Served:
    """One generation request the server saw: the fault applied and the tokens it consumed and reported."""

    path: str
    n: int
    fault: Fault
    consumed: int  # tokens the server spent on it (0 when it refused or reset before processing)
    reported: int  # tokens its answer reported (what a client could charge)


def _words(text: str) -> int:
    return len(text.split())


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "prompt" in body:
        return _words(str(body["prompt"]))
    return sum(_words(str(m.get("content") or "")) for m in body.get("messages", []) if isinstance(m, dict))


def _scripted_answer(body: dict[str, Any], index: int) -> str:
    """Step-level search continues a partial answer: give it a final step; otherwise one step, then the answer."""
    if body.get("continue_final_message") or (body.get("stop") and "prompt" not in body and index % 2):
        return DEFAULT_ANSWER
    if body.get("stop"):
        return "Let me think.\n\n"
    return DEFAULT_ANSWER


def _logprobs(text: str) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": w,
                "logprob": -0.1,
                "top_logprobs": [{"token": w, "logprob": -0.1}, {"token": "x", "logprob": -3}],
            }
            for w in text.split()
        ]
    }


class OpenAIApp:
    """The OpenAI-compatible ASGI app: scripted answers, or a proxy to ``upstream``, with queued faults.

    Args:
        upstream: a real server's API root (``http://127.0.0.1:8765/v1``); None: answer from the script.
        model: the served model name (scripted mode).
        answer: the scripted text of choice ``index`` for a request body.
    """

    def __init__(
        self,
        *,
        upstream: str | None = None,
        model: str = "fault-model",
        answer: Callable[[dict[str, Any], int], str] = _scripted_answer,
    ) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1") if upstream else None
        self.model = model
        self.answer = answer
        self.faults: deque[Fault] = deque()
        self.default = Fault()
        self.served: list[Served] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None

    def next_fault(self) -> Fault:
        with self._lock:
            return self.faults.popleft() if self.faults else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        raw = message.get("body", b"")
        path = scope["path"]
        self._receive(path, scope["headers"], raw)
        if path.endswith(("/chat/completions", "/completions")):
            await self._generate(path, raw, send)
        elif self.upstream is not None:
            status, data = await self._forward(path, raw, scope["method"])
            await _send_json(send, status, data)
        elif path.endswith("/models"):
            await _send_json(send, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        elif path == "/tokenize":
            await _send_json(send, 200, {"count": _prompt_tokens(json.loads(raw or b"{}"))})
        else:
            await _send_json(send, 404, {"object": "error", "message": f"no route {path}"})

    async def _generate(self, path: str, raw: bytes, send: Send) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            await _send_json(send, 400, {"object": "error", "message": "the body is not JSON"})
            return
        fault = self.next_fault()
        n = int(body.get("n") or 1)
        if fault.kind == "reset":
            self._record(path, n, fault, 0, 0)
            await send({"type": "fault.abort"})
            return
        if fault.kind == "status" and not fault.processed:
            self._record(path, n, fault, 0, 0)
            await _send_json(send, fault.status, _error(fault.status), retry_after=fault.retry_after)
            return
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        stream = bool(body.get("stream"))
        if stream:
            raw = json.dumps({k: v for k, v in body.items() if k not in ("stream", "stream_options")}).encode()
        status, reply = await self._reply(path, raw, body)
        if status != 200:
            await _send_json(send, status, reply)
            return
        if stream:
            await self._streamed(path, fault, reply, send)
            return
        await self._faulted(path, n, fault, reply, send)

    async def _streamed(self, path: str, fault: Fault, reply: dict[str, Any], send: Send) -> None:
        """Send ``reply`` as server-sent events, with ``fault`` applied to the stream."""
        usage = reply.get("usage") or {}
        consumed = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        choice = reply["choices"][0]
        chat = "message" in choice
        text = str(choice["message"]["content"] if chat else choice["text"])
        words = text.split(" ")
        pieces = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]

        def event(piece: str) -> dict[str, Any]:
            delta = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            return {"id": "cmpl-fault", "model": self.model, "choices": [delta | {"finish_reason": None}]}

        events = [json.dumps(event(p)).encode() for p in pieces if p]
        last = event("") | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
        events.append(json.dumps(last).encode())
        half = len(events) // 2
        if fault.kind == "malformed":
            events.insert(half, b'{"choices": [{"delta": {"content": "x')
        if fault.kind == "status" and fault.processed:
            events = [*events[:half], json.dumps({"error": _error(fault.status)}).encode()]
        elif fault.kind != "no_usage":
            events.append(json.dumps({"id": "cmpl-fault", "choices": [], "usage": usage}).encode())
        events.append(b"[DONE]")
        reported = 0 if fault.kind in ("no_usage", "malformed", "truncate", "status") else consumed
        self._record(path, 1, fault, consumed, reported)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, data in enumerate(events):
            if index == half and fault.kind == "truncate":
                await send({"type": "fault.abort"})
                return
            if index == half and fault.kind == "stall":
                await asyncio.sleep(fault.delay_s)
            if fault.kind == "drip":
                await asyncio.sleep(fault.delay_s)
            await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _faulted(self, path: str, n: int, fault: Fault, reply: dict[str, Any], send: Send) -> None:
        """Apply a fault that comes after the server did the work (it consumed the tokens)."""
        usage = reply.get("usage") or {}
        consumed = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        reported = consumed
        if fault.kind == "status":
            data = _error(fault.status) | ({"usage": usage} if fault.usage_in_error else {})
            self._record(path, n, fault, consumed, consumed if fault.usage_in_error else 0)
            await _send_json(send, fault.status, data, retry_after=fault.retry_after)
            return
        if fault.kind == "wrong_n":
            original = reply["choices"]
            reply["choices"] = [dict(original[i % len(original)], index=i) for i in range(fault.choices)]
        if fault.kind == "no_usage":
            reply.pop("usage", None)
            for choice in reply["choices"]:
                if not fault.keep_ids:
                    choice.pop("token_ids", None)
        payload = json.dumps(reply).encode()
        if fault.kind == "malformed":
            payload = b'{"id": "cmpl-1", "choices": [{"index": 0, "message": {"content": "The ans\x00}}'
        if fault.kind in ("no_usage", "malformed", "truncate"):
            reported = 0  # the client never sees a usage object
        self._record(path, n, fault, consumed, reported)
        await _send_body(send, payload, fault)

    async def _reply(self, path: str, raw: bytes, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.upstream is not None:
            return await self._forward(path, raw, "POST")
        n = int(body.get("n") or 1)
        limit = int(body.get("max_tokens") or 16)
        texts = [self.answer(body, i) for i in range(n)]
        finishes = ["length" if _words(t) > limit else "stop" for t in texts]
        texts = [t if _words(t) <= limit else " ".join(t.split()[:limit]) for t in texts]  # a word is a token
        chat = path.endswith("/chat/completions")
        choices = []
        for index, text in enumerate(texts):
            choice: dict[str, Any] = {"index": index, "finish_reason": finishes[index]}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choice["token_ids"] = list(range(_words(text)))
            if body.get("logprobs"):
                choice["logprobs"] = _logprobs(text)
            choices.append(choice)
        prompt, completion = _prompt_tokens(body), sum(_words(t) for t in texts)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return 200, {
            "id": "cmpl-fault",
            "object": "chat.completion",
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    async def _forward(self, path: str, raw: bytes, method: str) -> tuple[int, dict[str, Any]]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=600.0)
        response = await self._client.request(
            method, f"{self.upstream}{path}", content=raw or None, headers={"content-type": "application/json"}
        )
        try:
            return response.status_code, response.json()
        except ValueError:
            return 502, {"object": "error", "message": f"upstream answered {response.text[:200]!r}"}

    def _receive(self, path: str, headers: list[tuple[bytes, bytes]], raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        names = {k.decode().lower(): v.decode() for k, v in headers}
        with self._lock:
            self.received.append(Received(path, names, body))

    def _record(self, path: str, n: int, fault: Fault, consumed: int, reported: int) -> None:
        with self._lock:
            self.served.append(Served(path, n, fault, consumed, reported))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _error(status: int) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "Error")
    return {"object": "error", "message": f"injected HTTP {status}", "type": kind, "code": status}


async def _send_json(send: Send, status: int, data: Any, *, retry_after: float | None = None) -> None:
    payload = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", f"{retry_after:g}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_body(send: Send, payload: bytes, fault: Fault) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    half = len(payload) // 2
    if fault.kind == "truncate":
        await send({"type": "http.response.body", "body": payload[:half], "more_body": True})
        await send({"type": "fault.abort"})
    elif fault.kind == "stall":
        await send({"type": "http.response.body", "body": payload[:half], "more_body": True})
        await asyncio.sleep(fault.delay_s)
        await send({"type": "http.response.body", "body": payload[half:]})
    elif fault.kind == "drip":
        for start in range(0, len(payload), 16):
            await send({"type": "http.response.body", "body": payload[start : start + 16], "more_body": True})
            await asyncio.sleep(fault.delay_s)
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": payload})


class _AbortRequestedError(Exception):
    """The app asked for the connection to be reset."""


class LoopbackServer:
    """Serves an ASGI app over HTTP/1.1 on 127.0.0.1 (a free port) from a daemon thread."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.port = 0
        self.connections = 0  # open right now
        self.accepted = 0  # in all
        self.disconnects = 0  # clients that went away before their answer was complete
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault server did not start")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closer = getattr(self.app, "aclose", None)
        if closer is not None:
            await closer()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        self.accepted += 1
        connection = h11.Connection(h11.SERVER)
        try:
            while await self._one_exchange(connection, reader, writer):
                connection.start_next_cycle()
        except _AbortRequestedError:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            self.connections -= 1
            if task is not None:
                self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _one_exchange(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request, run the app on it, write its answer; False when the connection is done."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return False
        if request is None:
            return False
        app = asyncio.ensure_future(self.app(_scope(request), _receiver(bytes(body)), _sender(connection, writer)))
        watch = asyncio.ensure_future(reader.read(65536))  # a client that goes away mid-answer cancels the app
        try:
            await asyncio.wait({app, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not app.done():
                app.cancel()
                self.disconnects += 1
            watch.cancel()
        early: bytes | None = None
        with contextlib.suppress(asyncio.CancelledError):
            early = await watch  # settled before anyone reads again (one reader at a time)
        with contextlib.suppress(asyncio.CancelledError):
            await app
        if early is not None:
            connection.receive_data(early)  # early bytes of the next request (or b"" at EOF)
        if app.cancelled():
            return False
        app.result()  # re-raise what the app raised (an abort, a broken pipe)
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE


def _scope(request: h11.Request) -> Scope:
    target = request.target.decode()
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method.decode(),
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": list(request.headers),
        "extensions": {"fault.abort": {}},
    }


def _receiver(body: bytes) -> Receive:
    sent = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the app only reads the request; a disconnect ends the task instead
        return {"type": "http.disconnect"}

    return receive


def _sender(connection: h11.Connection, writer: asyncio.StreamWriter) -> Send:
    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "fault.abort":
            raise _AbortRequestedError
        if kind == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", [])]
            writer.write(connection.send(h11.Response(status_code=message["status"], headers=headers)) or b"")
        elif kind == "http.response.body":
            if message.get("body"):
                writer.write(connection.send(h11.Data(data=message["body"])) or b"")
            if not message.get("more_body", False):
                writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    return send


@dataclass
class FaultServer:
    """An ``OpenAIApp`` served on loopback: push faults, point a client at ``url``, read ``served``."""

    upstream: str | None = None
    model: str = "fault-model"
    app: OpenAIApp = field(init=False)
    server: LoopbackServer = field(init=False)

    def __post_init__(self) -> None:
        self.app = OpenAIApp(upstream=self.upstream, model=self.model)
        self.server = LoopbackServer(self.app)

    def __enter__(self) -> FaultServer:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        """The API root to give a client (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.server.port}/v1"

    def push(self, *faults: Fault) -> None:
        """Queue faults for the next generation requests, in order; after them, requests are answered normally."""
        with self.app._lock:
            self.app.faults.extend(faults)

    def reset(self, default: Fault | None = None) -> None:
        """Forget queued faults and what was served; ``default`` applies when the queue is empty."""
        with self.app._lock:
            self.app.faults.clear()
            self.app.served.clear()
            self.app.received.clear()
            self.app.default = default or Fault()

    @property
    def served(self) -> list[Served]:
        with self.app._lock:
            return list(self.app.served)

    @property
    def received(self) -> list[Received]:
        """Every request the server received (generations, model lists, prompt counts), in order."""
        with self.app._lock:
            return list(self.app.received)

    @property
    def pending(self) -> int:
        """Faults still queued."""
        with self.app._lock:
            return len(self.app.faults)
