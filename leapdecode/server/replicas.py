"""leapdecode serve-replicas: the same server N times behind Ray Serve's HTTP proxy. Each replica builds the
whole engine (model, scheduler, batching, metrics) from one ServerConfig; the proxy spreads requests over them.
Imported only by `serve-replicas`, so the base install never needs Ray."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from dataclasses import dataclass, replace

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leapdecode.errors import LeapError
from leapdecode.server import ServerConfig, build_app

try:
    import ray
    from ray import serve
    from ray.serve.exceptions import RayServeException
except ImportError as exc:  # the extra is optional; say how to get it rather than show a traceback
    raise LeapError(f"serving replicas needs Ray Serve ({exc}): pip install -e '.[ray]'") from exc

REPLICA_HEADER = "x-leapdecode-replica"
APP_NAME = "leapdecode"


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    server: ServerConfig
    replicas: int = 2
    threads_per_replica: int | None = None  # default: this machine's cores shared evenly
    ray_address: str | None = None  # a running Ray cluster to join; None starts one on this machine

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise LeapError("--replicas must be >= 1")
        if self.threads_per_replica is not None and self.threads_per_replica < 1:
            raise LeapError("--threads-per-replica must be >= 1")

    @property
    def threads(self) -> int:
        # Replicas on one machine that each take every core fight over them; share the cores instead.
        return self.threads_per_replica or max(1, (os.cpu_count() or 1) // self.replicas)


class ReplicaHeader:
    """ASGI middleware naming the replica on every response, so a client can see where the load went.
    Plain ASGI rather than BaseHTTPMiddleware: it touches only the response start and leaves SSE untouched."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app, self.name = app, name.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), self.name)]
            await send(message)

        await self.app(scope, receive, named)


@serve.ingress()  # no app here: each replica builds its own in __serve_build_asgi_app__
class Replica:
    """One engine. Ray runs the built app's lifespan (uvicorn's LifespanOn) after the build, so the scheduler
    thread starts then, and stops (with the config's grace) when Ray tears the replica down."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    async def __serve_build_asgi_app__(self) -> ASGIApp:
        # Loading the model takes seconds; off the replica's event loop so its health checks keep answering.
        app = await asyncio.to_thread(build_app, self.config)
        app.add_middleware(ReplicaHeader, name=_replica_name())
        return app


def _replica_name() -> str:
    context = serve.get_replica_context()
    return f"{context.deployment}#{context.replica_tag}"


def deploy(config: ReplicaConfig, host: str = "127.0.0.1", port: int = 8000) -> str:
    """Start (or join) Ray, put Serve's proxy on host:port and N replicas behind it; returns the base URL
    once every replica has loaded its model."""
    threads = config.threads
    if config.ray_address:
        ray.init(address=config.ray_address)
    else:
        # Ray's CPU count is a placement token, not a limit: let the threads asked for fit on this machine.
        ray.init(num_cpus=max(os.cpu_count() or 1, config.replicas * threads), include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    server = config.server
    deployment = serve.deployment(Replica).options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": threads},
        # The engine batches and queues itself (429 past max_queue); Ray must not cap it below that.
        max_ongoing_requests=server.max_batch + server.max_queue,
        graceful_shutdown_timeout_s=server.shutdown_grace + 5,
    )
    try:
        serve.run(deployment.bind(replace(server, threads=threads)), name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:  # a replica that cannot build its engine (a bad --model...): its log says why
        raise LeapError(f"the replicas did not start ({exc}); the replica traceback above says why") from exc
    return f"http://{host}:{port}"


def shutdown() -> None:
    """Drain, then stop. Deleting the app first lets each replica finish its running requests (up to the grace)
    while the proxy is still there to carry the answers out; serve.shutdown alone kills the proxy first."""
    if ray.is_initialized():
        with contextlib.suppress(RayServeException):  # nothing deployed yet: nothing to drain
            serve.delete(APP_NAME)
        serve.shutdown()
    ray.shutdown()


def serve_replicas(config: ReplicaConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C or SIGTERM, then let the replicas finish what they run and stop."""
    try:
        url = deploy(config, host, port)
        print(f"leapdecode: serving {config.server.served_name or config.server.model} at {url}/v1 with "
              f"{config.replicas} replicas x {config.threads} threads (method {config.server.method})", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:  # also when ray.init's own SIGTERM handler exits mid-deploy
        shutdown()


def _interrupt(signum: int, frame: object) -> None:
    # ray.init's handler would sys.exit at once; take SIGTERM like Ctrl-C so the replicas drain first.
    raise KeyboardInterrupt
