"""Read an OpenAI-compatible server-sent event stream into text pieces and one final answer (no I/O here).

The accumulated answer is rebuilt in the shape of a non-streamed response, so ``parse_response`` reads it
and the usage rules (what the server leaves out is bounded from above) are the same for both paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from adaptive_ttc.errors import BackendResponseError, BackendStatusError
from adaptive_ttc.types import GenerationRequest

__all__ = ["StreamAccumulator", "stream_payload"]

_DONE = "[DONE]"


def stream_payload(body: dict[str, Any]) -> dict[str, Any]:
    """A request body asking for a stream with the usage in its last event."""
    body = dict(body)
    body.pop("return_token_ids", None)  # token ids are not needed: the usage event counts the tokens
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamAccumulator:
    """Feeds on a stream's ``data:`` lines; ``feed`` returns the new text, ``response`` the whole answer."""

    request: GenerationRequest
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    done: bool = False
    _logprobs: list[Any] = field(default_factory=list)
    _completion_logprobs: dict[str, list[Any]] = field(default_factory=dict)
    _tools: dict[int, _ToolCallParts] = field(default_factory=dict)

    @property
    def emitted(self) -> bool:
        """True once any text has been handed out."""
        return bool(self.text)

    def feed_line(self, line: str) -> str:
        """The text a line of the stream adds ('' for comments, keep-alives, usage and the end marker)."""
        if not line.startswith("data:"):
            return ""  # blank separators, ``event:``/``id:`` fields and ``:`` comments carry no data here
        data = line[len("data:") :].strip()
        if data == _DONE:
            self.done = True
            return ""
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise BackendResponseError(f"the server's stream held an unreadable event: {data[:200]!r}") from exc
        return self.feed(event)

    def feed(self, event: Any) -> str:
        """The text one decoded event adds."""
        if not isinstance(event, dict):
            raise BackendResponseError(f"the server's stream held an event that is not an object: {str(event)[:200]}")
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            text = f"the server failed mid-stream: {str(message)[:300]}"
            raise BackendStatusError(text, status_code=status, body=json.dumps(event)[:2000])
        if isinstance(event.get("model"), str):
            self.model = event["model"]
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason") is not None:
            self.finish_reason = str(choice["finish_reason"])
        piece = self._chat(choice) if self.request.messages else self._completion(choice)
        if piece:
            self.text.append(piece)
        return piece

    def _chat(self, choice: dict[str, Any]) -> str:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return ""
        for part in delta.get("tool_calls") or ():
            if isinstance(part, dict):
                self._tool_part(part)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            self._logprobs.extend(logprobs["content"])
        content = delta.get("content")
        return content if isinstance(content, str) else ""

    def _completion(self, choice: dict[str, Any]) -> str:
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            for key in ("tokens", "token_logprobs", "top_logprobs"):
                if isinstance(logprobs.get(key), list):
                    self._completion_logprobs.setdefault(key, []).extend(logprobs[key])
        text = choice.get("text")
        return text if isinstance(text, str) else ""

    def _tool_part(self, part: dict[str, Any]) -> None:
        given = part.get("index")
        index = given if isinstance(given, int) else len(self._tools)
        call = self._tools.setdefault(index, _ToolCallParts())
        if isinstance(part.get("id"), str):
            call.id = part["id"]
        function = part.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                call.name += function["name"]
            if isinstance(function.get("arguments"), str):
                call.arguments.append(function["arguments"])

    def response(self) -> dict[str, Any]:
        """The stream's answer in the shape of a non-streamed response (for ``parse_response``)."""
        text = "".join(self.text)
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish_reason}
        if self.request.messages:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self._tools:
                message["tool_calls"] = [
                    {
                        "id": call.id or f"call_{index}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": "".join(call.arguments)},
                    }
                    for index, call in sorted(self._tools.items())
                ]
            choice["message"] = message
            if self.request.logprobs:
                choice["logprobs"] = {"content": self._logprobs}
        else:
            choice["text"] = text
            if self.request.logprobs:
                choice["logprobs"] = self._completion_logprobs
        data: dict[str, Any] = {"choices": [choice]}
        if self.usage is not None:
            data["usage"] = self.usage
        if self.model is not None:
            data["model"] = self.model
        return data
