"""leapdecode serve: an OpenAI-compatible server over the batching scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leapdecode.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model: str = "smollm2-135m"
    dtype: str = "auto"
    method: str = "suffix"  # requests may name another; "none" turns speculation off
    served_name: str | None = None  # the id clients send as "model" (default: the model argument)
    threads: int | None = None
    max_batch: int = 16
    max_queue: int = 64
    adaptive: bool = True  # back speculation off under load, by measured step cost
    shutdown_grace: float = 30.0  # seconds running requests get to finish on SIGTERM
    draft_model: str | None = None  # methods "draft" and "auto" (as one of its arms): the drafting model, loaded at start
    draft_dtype: str = "auto"  # the draft's own precision (models/draft_models.py)
    tree: int = 0  # token trees of this many branches for every method that can tree; 0: chains
    skip_layers: str | None = None  # method "layerskip" (and auto's layerskip arm): the layers it skips
    skip_dtype: str | None = None  # method "layerskip" (and auto's layerskip arm): the precision its draft reads the weights at (e.g. int4)

    def __post_init__(self) -> None:
        from leapdecode.dllm.config import DLLM_ONLY
        from leapdecode.drafters import DRAFTER_METHODS

        if self.method not in DRAFTER_METHODS + DLLM_ONLY:
            raise InvalidRequest(f"unknown method {self.method!r}; known: {', '.join(DRAFTER_METHODS + DLLM_ONLY)}")
        if self.method == "draft" and not self.draft_model:
            raise InvalidRequest("method draft needs --draft-model NAME|PATH: a smaller model with the same tokenizer")
        if self.shutdown_grace < 0:
            raise InvalidRequest("shutdown_grace must be >= 0")
        from leapdecode.decode.tree import tree_width

        tree_width(self.tree)


def build_app(config: ServerConfig):
    """Load the model and wire LLM -> Scheduler -> Service -> FastAPI app (the scheduler starts with the app,
    in a thread of its own, unless the caller runs it: see serve())."""
    from leapdecode.api import LLM
    from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
    from leapdecode.drafters import DRAFTER_METHODS
    from leapdecode.server.app import create_app
    from leapdecode.server.service import Service

    llm = LLM(config.model, dtype=config.dtype, threads=config.threads)
    if llm.is_diffusion:
        return _diffusion_app(llm, config)
    if config.method not in DRAFTER_METHODS:
        raise InvalidRequest(f"method {config.method} is for diffusion LMs; {config.model} is autoregressive")
    scheduler = Scheduler(llm.network, SchedulerConfig(config.max_batch, config.max_queue, config.adaptive),
                          policy=llm.policy)
    service = Service(llm, scheduler, config.served_name or config.model, config.method, _method_options(config))
    if config.draft_model:
        llm.drafts.load(config.draft_model, config.draft_dtype)  # load (and check its tokenizer) now
    if config.skip_layers or config.skip_dtype or config.method == "layerskip":
        # load the drafting weights and run (or read) the skip search now, not in the first request
        llm.generate(prompt_ids=llm.encode("Hello"), method="layerskip", max_new_tokens=2,
                     **service.method_options["layerskip"])
    return create_app(service, config.shutdown_grace)


def _diffusion_app(llm: Any, config: ServerConfig):
    """A diffusion LM: one request at a time, each streamed block by block (dllm/serving.py)."""
    from leapdecode.dllm.config import DLLM_METHODS
    from leapdecode.dllm.serving import BlockScheduler
    from leapdecode.server.app import create_app
    from leapdecode.server.service import Service

    if config.method not in DLLM_METHODS or config.draft_model or config.skip_layers or config.tree:
        raise InvalidRequest(f"a diffusion LM is served with --method {', '.join(DLLM_METHODS)} and no drafting "
                             "options (--draft-model, --skip-layers, --tree)")
    scheduler = BlockScheduler(config.max_queue)
    service = Service(llm, scheduler, config.served_name or config.model, config.method)  # type: ignore[arg-type]
    return create_app(service, config.shutdown_grace)


def _method_options(config: ServerConfig) -> dict[str, dict[str, object]]:
    """The server's own options, per method that takes them (method_options.py): what a request
    naming that method runs with. With a tree width, every method that can tree does."""
    from leapdecode.drafters import DRAFTER_METHODS, can_tree
    from leapdecode.method_options import for_method

    given = {"draft_model": config.draft_model, "draft_dtype": config.draft_dtype if config.draft_model else None,
             "skip_layers": config.skip_layers, "skip_dtype": config.skip_dtype}
    given = {k: v for k, v in given.items() if v}
    tree = {"tree": config.tree} if config.tree else {}
    return {m: for_method(m, given) | (tree if can_tree(m) else {}) for m in DRAFTER_METHODS}


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """uvicorn in a thread, decoding in this one: the thread that loaded the model keeps its OpenMP team
    (see Scheduler.start). SIGTERM / Ctrl-C stop accepting, let running requests finish, then exit."""
    import signal
    import threading

    import uvicorn

    app = build_app(config)
    scheduler = app.state.service.scheduler
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=int(config.shutdown_grace) or None))
    http = threading.Thread(target=server.run, name="leapdecode-http", daemon=True)
    scheduler.run_in_caller = True  # the app's startup must not start a decode thread
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    http.start()
    batch = "one request at a time" if app.state.service.llm.is_diffusion else f"batch up to {config.max_batch}"
    print(f"leapdecode: serving {config.served_name or config.model} at http://{host}:{port}/v1 "
          f"(method {config.method}, {batch})", flush=True)
    scheduler.run(keep_going=http.is_alive)  # returns once the app's shutdown stopped it, or uvicorn died
    http.join(timeout=config.shutdown_grace + 10)
