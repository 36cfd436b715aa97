"""The ASGI application: OpenAI's chat completions and models, health, and workflow budgets over HTTP.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, ``POST /v1/budgets``,
``GET /v1/budgets/{id}``, ``DELETE /v1/budgets/{id}``. Every call runs through the library's one engine
(``Engine.run``); a request joins a workflow budget with ``X-Adaptive-Budget`` (and ``X-Adaptive-Node``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from adaptive_ttc.engine import EngineResult
from adaptive_ttc.errors import AdaptiveTTCError
from adaptive_ttc.server.access import Guard, log_fields, too_large
from adaptive_ttc.server.errors import APIError, from_library_error
from adaptive_ttc.server.responses import Reply, dumps, trace
from adaptive_ttc.server.service import Service
from adaptive_ttc.server.streaming import start_stream
from adaptive_ttc.server.wire import parse_chat_call, parse_json_object

__all__ = ["create_app"]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status, headers, media_type="application/json")


class _Routes:
    """The handlers, over one ``Service``."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.started = int(time.time())

    async def health(self, request: Request) -> Response:
        service = self.service
        return _json(
            {
                "status": "ok",
                "model": service.model,
                "in_flight": service.in_flight,
                "budgets_open": service.budgets.open_count,
            }
        )

    async def models(self, request: Request) -> Response:
        model = {"id": self.service.model, "object": "model", "created": self.started, "owned_by": "adaptive-ttc"}
        return _json({"object": "list", "data": [model]})

    async def create_budget(self, request: Request) -> Response:
        view = self.service.budgets.create(parse_json_object(await self._body(request)))
        log_fields(request.scope)["budget"] = view["id"]
        return _json(view)

    async def budget(self, request: Request) -> Response:
        budget_id = str(request.path_params["budget_id"])
        log_fields(request.scope)["budget"] = budget_id
        budgets = self.service.budgets
        return _json(budgets.close(budget_id) if request.method == "DELETE" else budgets.view(budget_id))

    async def chat(self, request: Request) -> Response:
        service, fields = self.service, log_fields(request.scope)
        settings = service.settings
        data = parse_json_object(await self._body(request))
        call = parse_chat_call(data, settings.max_tokens, settings.context_tokens)
        label = service.configuration_of(call.model, call.strategy)
        engine = service.engine(label)
        budget_id = request.headers.get("x-adaptive-budget") or None
        node = request.headers.get("x-adaptive-node") or None
        reply = Reply(call.model, f"chatcmpl-{uuid.uuid4().hex}")
        fields.update(request_id=reply.id, budget=budget_id, node=node, requested=label, stream=call.stream)
        ledger = service.ledger_of(budget_id)

        def finish(out: EngineResult) -> dict[str, Any]:
            usage = out.result.usage
            fields.update(
                configuration=out.decision.configuration.label,
                reason=out.decision.reason,
                prompt_tokens=usage.input_tokens,
                completion_tokens=usage.output_tokens,
            )
            return trace(out, ledger, budget_id, node)

        slot = service.slot()
        headers = {"x-request-id": reply.id}
        try:
            if call.stream:
                stream = await start_stream(
                    engine, call, ledger=ledger, node=node, reply=reply, finish=finish, on_done=slot.release
                )
                headers["cache-control"] = "no-cache"
                return StreamingResponse(stream.events(), media_type="text/event-stream", headers=headers)
            out = await engine.run(call.request, ledger=ledger, node=node)
        except AdaptiveTTCError as exc:
            raise from_library_error(exc) from exc
        finally:
            if not call.stream:
                slot.release()
        return _json(reply.completion(out, finish(out)), headers=headers)

    async def _body(self, request: Request) -> bytes:
        """The body, read up to the size limit (a body sent without a length is cut off there too)."""
        limit = self.service.settings.max_body_bytes
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)


async def _api_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AdaptiveTTCError):  # raised outside a completion (a budget route): e.g. Redis unreachable
        exc = from_library_error(exc)
    error = exc if isinstance(exc, APIError) else APIError(500, str(exc), "server_error", "internal_error")
    log_fields(request.scope)["error"] = error.code
    return _json(error.body(), error.status, error.response_headers())


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        message = f"no route {request.method} {request.url.path}; see GET /v1/models, POST /v1/chat/completions"
        error = APIError(404, message, code="unknown_url")
    elif status == 405:
        error = APIError(405, f"{request.url.path} does not take {request.method}", code="method_not_allowed")
    else:
        error = APIError(status, str(getattr(exc, "detail", exc)), code="http_error")
    return await _api_error(request, error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    error = APIError(500, f"the server failed: {type(exc).__name__}: {exc}", "server_error", "internal_error")
    return await _api_error(request, error)


def create_app(service: Service) -> Starlette:
    """The ASGI app serving ``service`` (run it with uvicorn, or test it in-process with httpx's ASGI transport)."""
    routes = _Routes(service)
    settings = service.settings
    return Starlette(
        routes=[
            Route("/health", routes.health, methods=["GET"]),
            Route("/v1/models", routes.models, methods=["GET"]),
            Route("/v1/chat/completions", routes.chat, methods=["POST"]),
            Route("/v1/budgets", routes.create_budget, methods=["POST"]),
            Route("/v1/budgets/{budget_id}", routes.budget, methods=["GET", "DELETE"]),
        ],
        middleware=[Middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)],
        exception_handlers={
            APIError: _api_error,
            AdaptiveTTCError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
