"""The bridge between HTTP handlers (asyncio) and the scheduler (its own thread). No torch here."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from leapdecode.api import LLM, Run
from leapdecode.batching.scheduler import Event, Scheduler
from leapdecode.drafters import DRAFTER_METHODS, required_options
from leapdecode.errors import InvalidRequest
from leapdecode.grammar.tools import Tools
from leapdecode.server.metrics import Metrics
from leapdecode.server.protocol import ChatRequest, CompletionRequest

if TYPE_CHECKING:
    from leapdecode.dllm.serving import DiffusionRun


class UnknownModel(InvalidRequest):
    """The request names a model this server does not serve."""


class Service:
    def __init__(self, llm: LLM, scheduler: Scheduler, model_id: str, method: str,
                 method_options: dict[str, dict[str, Any]] | None = None) -> None:
        self.llm, self.scheduler, self.model_id, self.method = llm, scheduler, model_id, method
        self.method_options = method_options or {}  # e.g. {"draft": {"draft_model": "..."}}
        self.metrics = Metrics(lambda: scheduler.queue_depth, lambda: scheduler.batch_size)
        scheduler.on_step = self.metrics.forward
        if not llm.is_diffusion:  # built now (about a second), not in the first structured request's handler
            llm.grammar_vocab

    @staticmethod
    def tools(req: ChatRequest | CompletionRequest) -> Tools:
        """A chat request's tools and tool_choice, validated (none for a text completion)."""
        if isinstance(req, ChatRequest):
            return Tools(req.tools, req.tool_choice, req.parallel_tool_calls)
        return Tools(None, None)

    def prepare(self, req: ChatRequest | CompletionRequest, tools: Tools | None = None) -> Run | DiffusionRun:
        """Validate a request against the model and turn it into a Run; raises InvalidRequest/UnknownModel.
        tools: the request's, as tools() made them (the prompt carries them, a grammar constrains the calls)."""
        if req.model != self.model_id:
            raise UnknownModel(f"the model {req.model!r} does not exist here; this server serves {self.model_id!r}")
        if problem := req.unsupported():
            raise InvalidRequest(problem)
        tools = tools if tools is not None else self.tools(req)
        ids = self._prompt_ids(req, tools)
        room = self.llm.network.max_context - len(ids)
        limit = req.limit() if req.limit() is not None else max(room, 1)  # a full prompt gets the clear error
        method = req.method or self.method
        if self.llm.is_diffusion:
            return self._prepare_diffusion(req, ids, limit, method, tools)
        if method not in DRAFTER_METHODS:
            raise InvalidRequest(f"unknown method {method!r}; known: {', '.join(DRAFTER_METHODS)}")
        missing = [o for o in required_options(method) if o not in self.method_options.get(method, {})]
        if missing:
            raise InvalidRequest(f"method {method!r} needs {', '.join(missing)}, which this server was not started with")
        if method == "eagle":  # a missing head is the request's 400 here; the decoding thread loads it
            self.llm.heads.check(self.method_options.get(method, {}).get("head"))
        options = dict(method=method, max_new_tokens=limit, temperature=req.temperature, top_p=req.top_p,
                       seed=req.seed, stop=req.stop_strings(), logprobs=req.top_logprobs_asked(),
                       **self._constraint(req, tools), **self.method_options.get(method, {}))
        return self.llm.stream(prompt_ids=ids, **options)

    def _constraint(self, req: ChatRequest | CompletionRequest, tools: Tools) -> dict[str, Any]:
        """generate()'s constraint option: the tools' grammar, or the response_format."""
        if tools.active and req.structured:
            raise InvalidRequest("response_format and tools together are not supported: give one")
        if tools.active:
            return {"constraint": tools.constraint(self.llm.grammar_vocab.lark_literal)}
        return {"response_format": req.response_format} if req.response_format is not None else {}

    def _prepare_diffusion(self, req: ChatRequest | CompletionRequest, ids: list[int], limit: int,
                           method: str, tools: Tools) -> DiffusionRun:
        """A diffusion LM decodes greedily, whole blocks (cut at max_tokens), with the server's method."""
        from leapdecode.dllm.serving import DiffusionRun

        if tools.active or req.structured or req.top_logprobs_asked() is not None:
            raise InvalidRequest("a diffusion LM fills its block in any order: tools, response_format and logprobs "
                                 "are for autoregressive models")
        if req.top_p != 1.0 or req.seed is not None or req.stop_strings():
            raise InvalidRequest("a diffusion LM decodes greedily here: top_p, seed and stop do not apply")
        # greedy unless the request asked for sampling (OpenAI's default temperature, 1, is not asking)
        temperature = req.temperature if "temperature" in req.model_fields_set else 0.0
        block = self.llm.config.block_size
        options = {"method": method, "max_new_tokens": -(-limit // block) * block, "temperature": temperature}
        options |= self.method_options.get(method, {})
        self.llm.validate(ids, **options)
        return DiffusionRun(self.llm, ids, options, limit)

    def _prompt_ids(self, req: ChatRequest | CompletionRequest, tools: Tools) -> list[int]:
        if isinstance(req, ChatRequest):
            given = [{"role": m.role, "content": m.text()} | ({"tool_calls": m.tool_calls} if m.tool_calls else {})
                     | ({"tool_call_id": m.tool_call_id} if m.tool_call_id else {}) for m in req.messages]
            messages, listed = tools.messages(given, self.llm.template_has_tools)
            return self.llm.encode(messages, tools=listed)
        if isinstance(req.prompt, list):
            if not req.prompt or any(not 0 <= t < self.llm.network.vocab_size for t in req.prompt):
                raise InvalidRequest("prompt token ids must be a non-empty list of ids within the vocabulary")
            return list(req.prompt)
        return self.llm.encode(req.prompt, raw=True)

    def subscribe(self, run: Run, endpoint: str) -> Subscription:
        """Queue the request (QueueFull when the queue is full) and return its event feed."""
        return Subscription(self, run, endpoint)

    def usage(self, run: Run) -> dict[str, Any]:
        """OpenAI's usage block plus this request's own speculative stats."""
        res = run.result()
        s = res.stats
        return {
            "prompt_tokens": len(run.prompt_ids), "completion_tokens": len(res.token_ids),
            "total_tokens": len(run.prompt_ids) + len(res.token_ids),
            "speculation": {"method": run.method, "accepted_per_forward": round(s.mean_accepted, 4),
                            "target_forwards": s.target_forwards, "drafted": s.drafted, "accepted": s.accepted}
                           | ({"arms": dict(s.arms)} if s.arms else {}),  # auto: steps each arm drafted
        }


class Subscription:
    """One request's events as the scheduler produces them. close() before the finish (a client that
    went away) cancels the request at the next step, which frees its slot and KV cache."""

    def __init__(self, service: Service, run: Run, endpoint: str) -> None:
        self.service, self.endpoint = service, endpoint
        loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.ticket = service.scheduler.submit(run, lambda ev: loop.call_soon_threadsafe(self.queue.put_nowait, ev))
        service.metrics.prompt_tokens.inc(len(run.prompt_ids))
        self.clock = _Clock(service.metrics)
        self.outcome: str | None = None  # set once finished or closed

    async def next(self) -> Event:
        ev: Event = await self.queue.get()
        self.clock.tick(ev.tokens)
        if ev.tokens or ev.drafted:
            self.service.metrics.step(ev.tokens, ev.drafted, ev.accepted)
        if ev.finish_reason:
            self._finish({"stop": "ok", "length": "ok"}.get(ev.finish_reason, ev.finish_reason))
        return ev

    def close(self) -> None:
        """Idempotent; synchronous so that it runs even inside a cancelled task's cleanup."""
        if self.outcome is None:
            self.service.scheduler.cancel(self.ticket)
            self._finish("cancelled")

    def _finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.service.metrics.requests.labels(self.endpoint, outcome).inc()
        self.service.metrics.latency.observe(self.clock.elapsed())


class _Clock:
    """Time to first token and inter-token latency of one request."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics, self.start = metrics, time.perf_counter()
        self.last: float | None = None

    def tick(self, tokens: int) -> None:
        if not tokens:
            return
        now = time.perf_counter()
        if self.last is None:
            self.metrics.ttft.observe(now - self.start)
            tokens -= 1  # the rest arrived with it
            gap = 0.0
        else:
            gap = (now - self.last) / tokens
        for _ in range(tokens):
            self.metrics.itl.observe(gap)
        self.last = now

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
