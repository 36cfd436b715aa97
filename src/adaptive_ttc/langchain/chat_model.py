"""``AdaptiveChatModel``: a LangChain chat model that picks a decoding strategy per call under a workflow budget."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, PrivateAttr

from adaptive_ttc.backends.base import TextSink
from adaptive_ttc.backends.factory import (
    SERVERS,
    backend_provider,
)
from adaptive_ttc.budget import Ledger
from adaptive_ttc.budget.scope import find_ledger
from adaptive_ttc.engine import Engine, EngineResult
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.langchain._request import CallDefaults, build_request, is_number
from adaptive_ttc.langchain._resources import EngineSpec, Resources
from adaptive_ttc.langchain._results import as_chunk, chat_result
from adaptive_ttc.langchain._settings import ChatModelSettings
from adaptive_ttc.langchain._structured import structured_output
from adaptive_ttc.langchain.telemetry import call_span, record_result
from adaptive_ttc.types import GenerationRequest

__all__ = ["EMBEDDED_MODEL", "AdaptiveChatModel"]

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


class AdaptiveChatModel(ChatModelSettings):
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

    _resources: Resources = PrivateAttr(default_factory=Resources)

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
    def model_name(self) -> str:
        """The model calls are attributed to (``model``, the backend's, or the embedded model's name)."""
        return self._model_name

    @property
    def _model_name(self) -> str:
        if self.model:
            return self.model
        backend = self.backend or self._resources.backend
        if backend is not None:
            return str(backend.model)
        return EMBEDDED_MODEL if not self.base_url else "unknown"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="adaptive_ttc",
            ls_model_name=str(kwargs.get("model") or self._model_name),
            ls_model_type="chat",
        )
        temperature, max_tokens = kwargs.get("temperature", self.temperature), kwargs.get("max_tokens", self.max_tokens)
        if temperature is not None and is_number(temperature):
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
        defaults = CallDefaults(
            max_tokens=self.max_tokens,
            temperature=self.temperature if self.temperature is not None else self._default_temperature(),
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
            body={**self.model_kwargs, **(self.extra_body or {})},
        )
        return build_request(messages, stop, kwargs, defaults)

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
            yield as_chunk(chat_result(out, ledger), already="".join(streamed))
        finally:
            if not task.done():  # the consumer stopped early: stop the call (the ledger settles what it spent)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _default_temperature(self) -> float:
        return self._resources.temperature(self._engine_spec())

    async def _get_engine(self) -> Engine:
        return await self._resources.get_engine(self._engine_spec())

    def _engine_spec(self) -> EngineSpec:
        return EngineSpec.of(self)

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
        return structured_output(self, schema, method=method, include_raw=include_raw)

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
        return chat_result(out, ledger)

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
        return chat_result(out, ledger)

    def _span(self, request: GenerationRequest, *, current: bool = True) -> AbstractContextManager[Any]:
        return call_span(self._model_name, self._provider, request.max_tokens, request.temperature, current=current)

    @property
    def _provider(self) -> str:
        """The provider spans name (``gen_ai.system``): what the backend says it is."""
        backend = self.backend or self._resources.backend
        if backend is not None:
            return backend_provider(backend)
        if not self.base_url:
            return "transformers"
        return SERVERS[self.server].provider if self.server in SERVERS else "openai-compatible"

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


def _scope(metadata: Mapping[str, Any] | None) -> tuple[Ledger | None, str | None]:
    """The run's ledger and graph node, read in the CALLER's context (before hopping to the portal)."""
    configurable: Mapping[str, Any] | None = None
    context: Any = None
    try:
        from langgraph.config import get_config  # noqa: PLC0415 - langgraph is optional at call time
        from langgraph.runtime import get_runtime  # noqa: PLC0415

        configurable = get_config().get("configurable") or {}
        context = getattr(get_runtime(), "context", None)
    except (ImportError, RuntimeError):
        pass
    node = (metadata or {}).get("langgraph_node")
    return find_ledger(configurable, context), str(node) if node is not None else None
