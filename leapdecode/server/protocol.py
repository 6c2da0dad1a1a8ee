"""Request bodies in OpenAI's shapes, validated by pydantic. A field this server does not honour is refused
with a 400 naming it, except the few that ask nothing of the answer (user, metadata, store, service_tier)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from leapdecode.decode.logprobs import MAX_TOP
from leapdecode.errors import InvalidRequest

HARMLESS = frozenset({"user", "metadata", "store", "service_tier"})  # ask nothing of the answer: accepted


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = 0.0  # only 0 is supported (see unsupported())
    presence_penalty: float = 0.0
    logprobs: bool | int | None = None
    response_format: dict[str, Any] | None = None  # text, json_object or json_schema: see grammar/spec.py
    method: str | None = Field(default=None, description="leapdecode: drafting method; 'none' turns speculation off")

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> str | None:
        """A request field set to something this server cannot honour, named, or None."""
        if self.frequency_penalty or self.presence_penalty:
            return "frequency_penalty and presence_penalty are not supported (they would change the answer)"
        unknown = sorted(set(self.model_extra or {}) - HARMLESS)
        if unknown:
            hint = {"functions": " (use tools)", "function_call": " (use tool_choice)",
                    "guided_json": " (use response_format)"}.get(unknown[0], "")
            return f"{', '.join(unknown)}: not supported by this server{hint}"
        return None

    def top_logprobs_asked(self) -> int | None:
        """How many alternatives per token the answer's logprobs carry; None: no logprobs."""
        raise NotImplementedError

    @property
    def structured(self) -> bool:
        """Whether response_format asks for more than text."""
        return self.response_format is not None and self.response_format.get("type") != "text"

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stop if s)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None  # a string, or text parts [{"type": "text", "text": ...}]
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool's answer: to which call

    def text(self) -> str:
        """The content as one string (text parts joined); other part types are the request's error."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in self.content):
            raise InvalidRequest("only text content parts are supported")
        return "".join(part["text"] for part in self.content)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None  # auto (default with tools), none, required, or a function
    parallel_tool_calls: bool = True
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP)

    def top_logprobs_asked(self) -> int | None:
        if self.logprobs is not None and not isinstance(self.logprobs, bool):
            raise InvalidRequest("logprobs is true or false in a chat request (top_logprobs: how many alternatives)")
        if not self.logprobs:
            if self.top_logprobs:
                raise InvalidRequest("top_logprobs needs logprobs: true")
            return None
        return self.top_logprobs or 0


class CompletionRequest(_Common):
    prompt: str | list[int] = Field(description="text, or token ids")
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's completions default
    echo: bool = False

    def unsupported(self) -> str | None:
        return "echo is not supported" if self.echo else super().unsupported()

    def top_logprobs_asked(self) -> int | None:
        """logprobs: n, the number of alternatives per token (0-5 in OpenAI's API; up to MAX_TOP here)."""
        if self.logprobs is None or self.logprobs is False:
            return None
        if self.logprobs is True or not 0 <= self.logprobs <= MAX_TOP:
            raise InvalidRequest(f"logprobs is an integer from 0 to {MAX_TOP} in a completions request")
        return int(self.logprobs)
