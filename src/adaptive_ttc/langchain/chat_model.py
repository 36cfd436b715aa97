"""``AdaptiveChatModel``: a LangChain chat model that picks a decoding strategy per call under a workflow budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from pydantic.v1 import BaseModel as BaseModelV1

from adaptive_ttc.backends.base import Backend, TextSink
from adaptive_ttc.budget import Ledger
from adaptive_ttc.budget.scope import find_ledger
from adaptive_ttc.engine import Engine, EngineResult
from adaptive_ttc.errors import ConfigurationError, InvalidRequestError
from adaptive_ttc.langchain.messages import to_langchain_tool_calls, to_messages
from adaptive_ttc.langchain.portal import Portal
from adaptive_ttc.langchain.telemetry import call_span, record_result
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import GenerationRequest

__all__ = ["EMBEDDED_MODEL", "AdaptiveChatModel"]

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
T = TypeVar("T")
DEFAULT_ROUTER = Path(__file__).resolve().parent.parent / "data" / "default_router.zip"


class _Resources:
    """What one model owns: its portal loop, its engine, and the backend/scorer it created (to close them)."""

    def __init__(self) -> None:
        self.portal = Portal()
        self.engine: Engine | None = None
        self.lock: asyncio.Lock | None = None
        self.owned: list[Any] = []

    def own(self, resource: T) -> T:
        self.owned.append(resource)
        return resource

    def close(self) -> None:
        owned, self.owned, self.engine, self.lock = self.owned, [], None, None
        for resource in owned:
            with contextlib.suppress(Exception):  # closing is best effort; the process may be shutting down
                self.portal.call(resource.aclose())
        self.portal.close()


class AdaptiveChatModel(BaseChatModel):
    """A chat model that spends test-time compute where it pays, inside the run's workflow budget.

    Each call decides a configuration (greedy, best-of-N, beam search) from the router's predicted accuracy
    and cost, reserves an upper bound of its tokens in the workflow budget (found with ``adaptive_ttc.budget``,
    the LangGraph run context, or ``config["configurable"]``), runs it, and charges what it really spent.

    Example:
        ```python
        llm = AdaptiveChatModel(base_url="http://127.0.0.1:8000/v1", model="Qwen2.5-1.5B-Instruct")
        with adaptive_ttc.budget(tokens=50_000, seconds=60) as b:
            graph.invoke({"question": "..."})
        print(b.report())
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str | None = None
    """Served model name (vLLM); defaults to the embedded model's name."""
    base_url: str | list[str] | None = None
    """An OpenAI-compatible server (vLLM), e.g. ``http://127.0.0.1:8000/v1``, or several replicas of it (a list, or
    one comma-separated string; requests go to the least busy); none means the embedded model."""
    api_key: SecretStr | None = None
    """Bearer token for ``base_url``."""
    backend: Any = Field(default=None, exclude=True)
    """A ready ``Backend`` (overrides ``base_url``); e.g. ``FakeBackend`` in tests."""
    router: Any = Field(default=None, exclude=True)
    """A ``Router``, or the path of a router file from ``adaptive-ttc train``; default: the packaged router."""
    strategy: str | None = None
    """A fixed configuration label (``greedy``, ``bon-majority-8``, ``beam-4x2x20``) instead of routing."""
    scorer: Any = Field(default=None, exclude=True)
    """A ``Scorer`` or spec (``self-certainty``, ``judge``, ``prm:URL``) for reward-guided configurations."""
    lambda_tokens: float | None = Field(default=None, ge=0)
    """Accuracy given up per token when no budget paces the call (default: the router's)."""
    lambda_latency: float | None = Field(default=None, ge=0)
    """Accuracy given up per second when no budget paces the call (default: the router's)."""
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    """Sampling temperature of sampled configurations (greedy always uses 0)."""
    max_tokens: int = Field(default=512, ge=1)
    """Most tokens one answer may generate (a budget may cut it further)."""
    timeout: float | None = Field(default=120.0, gt=0)
    """Seconds per HTTP request."""
    stop: list[str] | None = None
    """Stop strings."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of a backend request the server cannot have processed (connection errors, 408/429/503)."""
    streaming: bool = False
    """When true, ``invoke`` streams internally, so callbacks see each piece of a greedy answer as it comes."""

    _resources: _Resources = PrivateAttr(default_factory=_Resources)

    def model_post_init(self, context: Any, /) -> None:
        """Close the connections this model opened when it is garbage-collected (or at ``close()``)."""
        super().model_post_init(context)
        weakref.finalize(self, self._resources.close)

    def close(self) -> None:
        """Close the backend and scorer this model created, and stop its event-loop thread."""
        self._resources.close()

    def warm_up(self) -> None:
        """Load what the first call would load (the embedded model, the router file, the scorer) now.

        Otherwise the first call does it, inside its workflow budget: loading the embedded model takes a few
        seconds of the run's time budget.
        """
        self._resources.portal.call(self._get_engine())

    async def awarm_up(self) -> None:
        """``warm_up`` for async code."""
        await self._resources.portal.acall(self._get_engine())

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, values: Any) -> Any:
        """``base_url`` and ``api_key`` default to ``ADAPTIVE_TTC_BASE_URL`` (several URLs: comma-separated) and
        ``ADAPTIVE_TTC_API_KEY``."""
        if isinstance(values, dict):
            if values.get("base_url") is None and os.environ.get("ADAPTIVE_TTC_BASE_URL"):
                values = {**values, "base_url": os.environ["ADAPTIVE_TTC_BASE_URL"]}
            if values.get("api_key") is None and os.environ.get("ADAPTIVE_TTC_API_KEY"):
                values = {**values, "api_key": os.environ["ADAPTIVE_TTC_API_KEY"]}
        return values

    @model_validator(mode="after")
    def _check_settings(self) -> AdaptiveChatModel:
        if self.strategy is not None:
            Configuration.parse(self.strategy)
        if self.backend is not None and not isinstance(self.backend, Backend):
            raise ConfigurationError(f"backend must implement the Backend protocol, got {type(self.backend).__name__}")
        if self.router is not None and not isinstance(self.router, Router | str | Path):
            raise ConfigurationError(f"router must be a Router or a router file path, got {type(self.router).__name__}")
        return self

    @property
    def _llm_type(self) -> str:
        return "adaptive-ttc"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self._model_name,
            "base_url": self.base_url,
            "strategy": self.strategy or "auto",
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    @property
    def _model_name(self) -> str:
        if self.model:
            return self.model
        if self.backend is not None:
            return str(self.backend.model)
        return EMBEDDED_MODEL

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="adaptive_ttc",
            ls_model_name=str(kwargs.get("model") or self._model_name),
            ls_model_type="chat",
        )
        temperature, max_tokens = kwargs.get("temperature", self.temperature), kwargs.get("max_tokens", self.max_tokens)
        if _is_number(temperature):
            params["ls_temperature"] = float(temperature)
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            params["ls_max_tokens"] = max_tokens
        stops = stop or self.stop
        if isinstance(stops, list | tuple) and stops:
            params["ls_stop"] = [str(x) for x in stops]
        return params

    # --- the one async core -------------------------------------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> GenerationRequest:
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        temperature = kwargs.get("temperature", self.temperature)
        stops = stop if stop is not None else self.stop or []
        tools = kwargs.get("tools") or []
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise InvalidRequestError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if not _is_number(temperature):
            raise InvalidRequestError(f"temperature must be a number in [0, 5], got {temperature!r}")
        if not isinstance(stops, list | tuple) or not all(isinstance(x, str) for x in stops):
            raise InvalidRequestError(f"stop must be a list of strings, got {stops!r}")
        if not isinstance(tools, list | tuple) or not all(isinstance(t, dict) for t in tools):
            raise InvalidRequestError(f"tools must be a list of tool schemas (use bind_tools), got {tools!r}")
        return GenerationRequest(
            messages=to_messages(messages),
            max_tokens=max_tokens,
            temperature=float(temperature),
            stop=tuple(stops),
            tools=tuple(tools),
            tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
        )

    async def _run(
        self, request: GenerationRequest, ledger: Ledger | None, node: str | None, on_text: TextSink | None = None
    ) -> EngineResult:
        engine = await self._get_engine()
        return await engine.run(request, ledger=ledger, node=node, on_text=on_text)

    async def _chunks(
        self, request: GenerationRequest, ledger: Ledger | None, node: str | None, span: Any
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        """The call as chunks (runs on the portal): greedy text as it comes, then a last chunk with the rest of
        the chosen text (all of it when the configuration could not stream), usage and the decision trace."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.ensure_future(self._run(request, ledger, node, on_text=queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        streamed: list[str] = []
        try:
            while (piece := await queue.get()) is not None:
                streamed.append(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            out = task.result()
            record_result(span, out)
            yield _as_chunk(self._result(out, ledger), already="".join(streamed))
        finally:
            if not task.done():  # the consumer stopped early: stop the call (the ledger settles what it spent)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _get_engine(self) -> Engine:
        resources = self._resources
        if resources.lock is None:
            resources.lock = asyncio.Lock()  # created on the portal loop, the only loop that runs _run
        async with resources.lock:
            if resources.engine is None:
                resources.engine = await asyncio.to_thread(self._build_engine)
        return resources.engine

    def _build_engine(self) -> Engine:
        backend = self.backend
        if backend is None:
            backend = self._resources.own(self._open_backend())
        scorer = self.scorer
        if isinstance(scorer, str):
            from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415 - only when a scorer spec is given

            scorer = self._resources.own(make_scorer(scorer, backend=backend))
        router = self.router
        if isinstance(router, str | Path):
            router = Router.load(router)
        configuration = Configuration.parse(self.strategy) if self.strategy else None
        if router is None and configuration is None:
            router = Router.load(DEFAULT_ROUTER) if DEFAULT_ROUTER.exists() else None
            configuration = None if router is not None else Configuration("greedy")
        base = router.lambdas if router is not None else Lambdas()
        lambdas = Lambdas(
            self.lambda_tokens if self.lambda_tokens is not None else base.tokens,
            self.lambda_latency if self.lambda_latency is not None else base.latency,
        )
        return Engine(backend, router=router, configuration=configuration, scorer=scorer, lambdas=lambdas)

    def _open_backend(self) -> Backend:
        if self.base_url or isinstance(self.base_url, list):  # an empty list is refused by the backend
            from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend  # noqa: PLC0415

            return OpenAICompatibleBackend(
                self.base_url,
                self._model_name,
                api_key=self.api_key.get_secret_value() if self.api_key else None,
                timeout=self.timeout or 120.0,
                max_retries=self.max_retries,
            )
        from adaptive_ttc.backends.transformers import TransformersBackend  # noqa: PLC0415 - optional extra

        return TransformersBackend.packaged()

    def _result(self, out: EngineResult, ledger: Ledger | None) -> ChatResult:
        tool_calls, invalid = to_langchain_tool_calls(out.result.selected.tool_calls)
        message = AIMessage(
            content=out.result.text,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(out),
            response_metadata=self._metadata(out, ledger),
        )
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"model_name": out.result.model})

    def _metadata(self, out: EngineResult, ledger: Ledger | None) -> dict[str, Any]:
        trace = out.trace()
        trace["strategy"] = out.result.strategy
        trace["latency_s"] = out.result.latency_s
        trace["requests"] = out.result.requests
        if ledger is not None:
            trace["budget_tokens_left"] = ledger.tokens_left
            trace["budget_seconds_left"] = ledger.seconds_left
        return {
            "model_name": out.result.model,
            "finish_reason": out.result.selected.finish_reason,
            "adaptive_ttc": trace,
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model (vLLM's tool calling). Calls with tools always run greedy.

        Args:
            tools: tools as LangChain tools, functions, pydantic models or OpenAI tool dicts.
            tool_choice: ``"auto"``, ``"none"``, ``"required"``/``"any"``/``True``, or a tool name.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        choice = _tool_choice(tool_choice, formatted)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answer in the shape of ``schema`` (a pydantic class, TypedDict or JSON schema).

        ``json_schema`` (default) constrains decoding with vLLM's structured outputs; ``json_mode`` asks for any
        JSON object; ``function_calling`` goes through ``bind_tools``. Such calls run greedy.
        """
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        function = convert_to_openai_tool(schema)["function"]
        if method == "json_schema":
            spec = {"name": function["name"], "schema": function.get("parameters", {}), "strict": True}
            response_format: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
        elif method == "json_mode":
            response_format = {"type": "json_object"}
        else:
            raise ConfigurationError(f"unknown method {method!r}; use json_schema, json_mode or function_calling")
        llm = self.bind(
            response_format=response_format,
            ls_structured_output_format={"schema": function, "kwargs": {"method": method}},
        )
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel | BaseModelV1)
        parser: Runnable[Any, Any] = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([fallback], exception_key="parsing_error")

    # --- LangChain entry points: async core, one thin sync path -------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, kwargs)
        ledger, node = _scope(run_manager.metadata if run_manager else None)
        with self._span(request) as span:
            out = await self._resources.portal.acall(self._run(request, ledger, node))
            record_result(span, out)
        return self._result(out, ledger)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, kwargs)
        ledger, node = _scope(run_manager.metadata if run_manager else None)
        with self._span(request) as span:
            out = self._resources.portal.call(self._run(request, ledger, node))
            record_result(span, out)
        return self._result(out, ledger)

    def _span(self, request: GenerationRequest, *, current: bool = True) -> AbstractContextManager[Any]:
        provider = "vllm" if self.base_url else "adaptive_ttc"
        return call_span(self._model_name, provider, request.max_tokens, request.temperature, current=current)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Stream a greedy answer as it is generated; other configurations stream the chosen answer when chosen."""
        request = self._request(messages, stop, kwargs)
        ledger, node = _scope(run_manager.metadata if run_manager else None)
        with self._span(request, current=False) as span:
            async for chunk in self._resources.portal.aiterate(self._chunks(request, ledger, node, span)):
                if run_manager is not None:
                    await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
                yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Stream a greedy answer as it is generated; other configurations stream the chosen answer when chosen."""
        request = self._request(messages, stop, kwargs)
        ledger, node = _scope(run_manager.metadata if run_manager else None)
        with self._span(request, current=False) as span:
            for chunk in self._resources.portal.iterate(self._chunks(request, ledger, node, span)):
                if run_manager is not None:
                    run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
                yield chunk


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tool_choice(choice: dict[str, Any] | str | bool | None, tools: list[dict[str, Any]]) -> Any:
    if choice is None or choice is False:
        return None
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice in ("auto", "none") or isinstance(choice, dict):
        return choice
    names = [t["function"]["name"] for t in tools]
    if choice not in names:
        raise ConfigurationError(f"tool_choice {choice!r} names no bound tool; tools are {names}")
    return {"type": "function", "function": {"name": choice}}


def _usage(out: EngineResult) -> UsageMetadata:
    usage = out.result.usage
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_token_details=InputTokenDetails(cache_read=usage.cached_input_tokens),
    )


def _as_chunk(result: ChatResult, *, already: str = "") -> ChatGenerationChunk:
    """The last chunk of a stream: the text not ``already`` streamed, tool calls, usage and metadata."""
    message = result.generations[0].message
    if not isinstance(message, AIMessage):
        raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
    text = str(message.content)
    chunk = AIMessageChunk(
        content=text[len(already) :] if text.startswith(already) else "",
        tool_call_chunks=[
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
            for i, c in enumerate(message.tool_calls)
        ],
        usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=chunk)


def _scope(metadata: Mapping[str, Any] | None) -> tuple[Ledger | None, str | None]:
    """The run's ledger and graph node, read in the CALLER's context (before hopping to the portal)."""
    configurable: Mapping[str, Any] | None = None
    context: Any = None
    try:
        from langgraph.config import get_config  # noqa: PLC0415 - langgraph is optional at call time

        config = get_config()
        configurable = config.get("configurable") or {}
        runtime = configurable.get("__pregel_runtime")
        context = getattr(runtime, "context", None)
    except (ImportError, RuntimeError):
        pass
    node = (metadata or {}).get("langgraph_node")
    return find_ledger(configurable, context), str(node) if node is not None else None
