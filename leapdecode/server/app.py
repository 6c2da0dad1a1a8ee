"""OpenAI-compatible HTTP endpoints over a Service: chat and text completions (streamed as Server-Sent
Events or whole), the model list, health and Prometheus metrics. Errors come back in OpenAI's JSON shape."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from leapdecode.api import Run
from leapdecode.batching.scheduler import QueueFull, ShuttingDown
from leapdecode.errors import LeapError
from leapdecode.grammar.tools import Tools, ToolStream
from leapdecode.server.logprobs import chat_logprobs, text_logprobs
from leapdecode.server.protocol import ChatRequest, CompletionRequest
from leapdecode.server.service import Service, Subscription, UnknownModel
from leapdecode.types import GenerationResult


def create_app(service: Service, shutdown_grace: float = 30.0) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.scheduler.start()  # a no-op when the caller decodes in its own thread (serve())
        yield
        await asyncio.to_thread(service.scheduler.stop, shutdown_grace)

    app = FastAPI(title="leapdecode", lifespan=lifespan)
    app.state.service = service
    _error_handlers(app, service)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "running": service.scheduler.batch_size,
                "waiting": service.scheduler.queue_depth}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": 0,
                                            "owned_by": "leapdecode"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Response:
        return await _complete(service, body, request, _ChatShape)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _complete(service, body, request, _TextShape)

    return app


def _error_handlers(app: FastAPI, service: Service) -> None:
    def reject(request: Request, status: int, message: str, kind: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
        service.metrics.requests.labels(request.url.path, "rejected" if status in (429, 503) else "invalid").inc()
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reject(request, 400, _validation_message(exc), "invalid_request_error")

    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
        return reject(request, 404, str(exc), "invalid_request_error", "model_not_found")

    @app.exception_handler(QueueFull)
    async def full(request: Request, exc: QueueFull) -> JSONResponse:
        if isinstance(exc, ShuttingDown):  # not the client's rate: this server is going away
            return reject(request, 503, str(exc), "service_unavailable", "shutting_down", {"Retry-After": "5"})
        return reject(request, 429, str(exc), "rate_limit_error", "queue_full", {"Retry-After": "1"})

    @app.exception_handler(LeapError)
    async def bad_request(request: Request, exc: LeapError) -> JSONResponse:
        return reject(request, 400, str(exc), "invalid_request_error")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return "the request body is not valid JSON"
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _complete(service: Service, body: ChatRequest | CompletionRequest, request: Request,
                    kind: type[_Shape]) -> Response:
    tools = service.tools(body)
    run = service.prepare(body, tools)
    shape = kind(service.model_id, tools, service.llm.tokenizer, body.top_logprobs_asked() is not None)
    feed = service.subscribe(run, request.url.path)  # QueueFull -> 429 before any byte is sent
    if body.stream:
        usage_chunk = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_sse(service, run, feed, shape, usage_chunk), media_type="text/event-stream")
    try:
        return await _whole(service, run, feed, request, shape)
    finally:
        feed.close()


async def _whole(service: Service, run: Run, feed: Subscription, request: Request, shape: _Shape) -> Response:
    """Wait for the whole answer; a client that goes away meanwhile cancels the request."""
    while True:
        try:
            ev = await asyncio.wait_for(feed.next(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                return Response(status_code=499)
            continue
        if ev.finish_reason == "error":
            return JSONResponse({"error": {"message": ev.error, "type": "server_error", "param": None,
                                           "code": None}}, status_code=500)
        if ev.finish_reason:
            return JSONResponse(shape.whole(run.result(), ev.finish_reason, service.usage(run)))


async def _sse(service: Service, run: Run, feed: Subscription, shape: _Shape,
               usage_chunk: bool) -> AsyncIterator[str]:
    """The answer's chunks. With stream_options.include_usage (usage_chunk), as OpenAI does: every chunk
    carries "usage": null and one last chunk with no choices carries the usage; without it, the finishing
    chunk carries the usage (our own addition, which bench-serve reads). Text that may open a tool call is
    held back; the calls go out whole at the end, one chunk each."""
    usage_field: dict[str, Any] = {"usage": None} if usage_chunk else {}
    text, logprobs_sent = ToolStream(shape.tools), 0
    try:
        if opening := shape.opening():
            yield _data(opening | usage_field)
        while True:
            ev = await feed.next()
            if ev.finish_reason == "error":
                yield _data({"error": {"message": ev.error, "type": "server_error", "param": None, "code": None}})
                break
            piece, calls = text.push(ev.text), []
            if ev.finish_reason in ("stop", "length"):
                rest, calls = text.finish()
                piece += rest
            logprobs = run.token_logprobs()[logprobs_sent:] if shape.logprobs else []
            if piece or logprobs:
                logprobs_sent += len(logprobs)
                yield _data(shape.chunk(piece, None, logprobs=logprobs) | usage_field)
            for i, call in enumerate(calls):
                yield _data(shape.call_chunk(i, call.as_dict()) | usage_field)
            if ev.finish_reason in ("stop", "length"):
                finish, usage = "tool_calls" if calls else ev.finish_reason, service.usage(run)
                if usage_chunk:
                    yield _data(shape.chunk("", finish) | usage_field)
                    yield _data(shape.usage_chunk(usage))
                else:
                    yield _data(shape.chunk("", finish) | {"usage": usage})
            if ev.finish_reason:
                break
        yield _data("[DONE]")
    finally:
        feed.close()  # a client that went away lands here too: the request is cancelled


def _data(obj: dict[str, Any] | str) -> str:
    """One Server-Sent Event carrying a JSON object (or OpenAI's closing [DONE]). Framed here rather than by
    sse-starlette, which on import patches uvicorn's exit handler to cut every stream on SIGTERM (ours let
    running requests finish). One data line is enough: JSON text has no raw newline."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


class _Shape:
    """How one endpoint spells its responses. tools: the request's (chat only); logprobs: whether the
    request asked for them."""

    def __init__(self, model_id: str, tools: Tools, tokenizer: Any, logprobs: bool) -> None:
        self.model, self.created, self.tools, self.logprobs = model_id, int(time.time()), tools, logprobs
        self.id = f"{self.prefix}-{uuid.uuid4().hex[:24]}"
        self.decode = lambda token: tokenizer.decode([token])
        self.offset = 0  # text so far, for the completions endpoint's text_offset

    prefix = ""

    def opening(self) -> dict[str, Any] | None:
        return None

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The chunk that ends a stream asked for with include_usage: no choices, the whole request's usage."""
        return self.chunk("", None) | {"choices": [], "usage": usage}

    def whole(self, res: GenerationResult, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def chunk(self, text: str, finish: str | None, role: bool = False,
              logprobs: list[Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def call_chunk(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _ChatShape(_Shape):
    prefix = "chatcmpl"

    def opening(self) -> dict[str, Any] | None:
        return self.chunk("", None, role=True)

    def whole(self, res: GenerationResult, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        content, calls = self.tools.parse(res.text)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"], finish = [c.as_dict() for c in calls], "tool_calls"
        logprobs = chat_logprobs(res.logprobs, self.decode) if self.logprobs and res.logprobs is not None else None
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage}

    def chunk(self, text: str, finish: str | None, role: bool = False,
              logprobs: list[Any] | None = None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": text} if role else ({"content": text} if text else {})
        return self._choice(delta, finish, chat_logprobs(logprobs, self.decode) if logprobs else None)

    def call_chunk(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        return self._choice({"tool_calls": [{"index": index} | call]}, None, None)

    def _choice(self, delta: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}


class _TextShape(_Shape):
    prefix = "cmpl"

    def whole(self, res: GenerationResult, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        logprobs = text_logprobs(res.logprobs, self.decode) if self.logprobs and res.logprobs is not None else None
        choice = {"index": 0, "text": res.text, "finish_reason": finish, "logprobs": logprobs}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage}

    def chunk(self, text: str, finish: str | None, role: bool = False,
              logprobs: list[Any] | None = None) -> dict[str, Any]:
        shaped = text_logprobs(logprobs, self.decode, self.offset) if logprobs else None
        self.offset += len(text)
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": shaped}]}
