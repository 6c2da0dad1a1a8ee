"""Request bodies in OpenAI's shapes, validated by pydantic. Fields we do not act on are accepted and
ignored (clients send them by default) unless honouring them would change the answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    method: str | None = Field(default=None, description="leapdecode: drafting method; 'none' turns speculation off")

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> str | None:
        """A request field set to something this server cannot honour, named, or None."""
        if self.frequency_penalty or self.presence_penalty:
            return "frequency_penalty and presence_penalty are not supported (they would change the answer)"
        if self.logprobs:
            return "logprobs are not supported"
        return None

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stop if s)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: str | list[int] = Field(description="text, or token ids")
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's completions default
    echo: bool = False

    def unsupported(self) -> str | None:
        return "echo is not supported" if self.echo else super().unsupported()
