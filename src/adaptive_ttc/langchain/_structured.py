"""``with_structured_output`` through the server's JSON-schema decoding or JSON mode (no I/O here)."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel
from pydantic.v1 import BaseModel as BaseModelV1

from adaptive_ttc.errors import ConfigurationError

__all__ = ["structured_output"]


def structured_output(
    llm: BaseChatModel,
    schema: dict[str, Any] | type,
    *,
    method: Literal["json_schema", "json_mode"] | str,
    include_raw: bool,
) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
    """``llm`` bound to answer in the shape of ``schema``, and the parser of its answer."""
    function = convert_to_openai_tool(schema)["function"]
    if method == "json_schema":
        spec = {"name": function["name"], "schema": function.get("parameters", {}), "strict": True}
        response_format: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
    elif method == "json_mode":
        response_format = {"type": "json_object"}
    else:
        raise ConfigurationError(f"unknown method {method!r}; use json_schema, json_mode or function_calling")
    bound = llm.bind(
        response_format=response_format,
        ls_structured_output_format={"schema": function, "kwargs": {"method": method}},
    )
    is_model = isinstance(schema, type) and issubclass(schema, BaseModel | BaseModelV1)
    parser: Runnable[Any, Any] = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
    if not include_raw:
        return bound | parser
    parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parse.with_fallbacks([fallback], exception_key="parsing_error")
