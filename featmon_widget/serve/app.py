"""The served application: the routes, the WebSocket, JSON errors for every bad input, the
offline `/docs`, and the guard (token, body bound) and optional CORS around them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from .auth import MAX_BODY_BYTES, Guard
from .docs import docs_html
from .hub import MAX_CLIENT_MESSAGE, Hub
from .routes import PREFIX, ApiError, monitoring_router

LOCATIONS = ("body", "query", "path", "header", "cookie")
REQUEST_THREADS = 4  # requests answered at once (the monitor's lock serialises most anyway)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 in our form: one sentence naming the field, and the full list."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if not isinstance(p, int)]
    field = next((p for p in loc if p not in LOCATIONS), loc[0] if loc else None)
    message = str(first.get("msg", "invalid request"))
    detail = f"{field}: {message}" if field else message
    return JSONResponse(status_code=422, content={
        "detail": detail, "field": field,
        "errors": [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                   for e in errors[:20]]})


def create_app(monitor: Any, token: str, *, cors_origins: Sequence[str] = (),
               max_body: int = MAX_BODY_BYTES, hub: Hub | None = None,
               request_threads: int = REQUEST_THREADS) -> tuple[Any, Hub]:
    """The ASGI application serving `monitor` (guarded by `token`; "" for none) and its hub."""
    hub = hub or Hub(monitor)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Few request threads: each holds the GIL for its Python work, and with many of them
        # the event loop (which gives the GIL up at every send) waits a switch interval each
        # time: under load the WebSockets starved. Requests beyond these wait in the loop.
        anyio.to_thread.current_default_thread_limiter().total_tokens = request_threads
        hub.start()
        try:
            yield
        finally:
            hub.stop()

    app = FastAPI(title="featmon_widget monitor", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  # A trailing slash is a 404 in JSON, not a body-less 307 redirect.
                  redirect_slashes=False,
                  description="Live statistics of SAE features, served from the process "
                              "that runs the model.")
    app.include_router(monitoring_router(monitor))

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status,
                            content={"detail": exc.detail, "field": exc.field})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, headers=exc.headers,
                            content={"detail": str(exc.detail), "field": None})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_html(app.openapi()))

    @app.websocket(PREFIX + "/ws")
    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        state = await run_in_threadpool(lambda: monitor.state)
        client = hub.connect(websocket.send_text, state)
        writer = asyncio.create_task(client.write())
        reader = asyncio.create_task(_read(websocket, hub, client))
        gone = asyncio.create_task(client.gone.wait())
        try:
            await asyncio.wait({writer, reader, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hub.disconnect(client)
            for task in (writer, reader, gone):
                task.cancel()
            await asyncio.gather(writer, reader, gone, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=1013 if client.dropped not in (
                    "disconnected", None) else 1000), timeout=1.0)

    guarded: Any = Guard(app, token, max_body)
    if cors_origins:  # outside the guard: a preflight carries no token
        from starlette.middleware.cors import CORSMiddleware

        guarded = CORSMiddleware(guarded, allow_origins=list(cors_origins),
                                 allow_methods=["GET", "POST", "DELETE"],
                                 allow_headers=["Authorization", "Content-Type"])
    return guarded, hub


async def _read(websocket: WebSocket, hub: Hub, client: Any) -> None:
    """Client messages until it disconnects (binary or oversized ones are refused)."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                hub.handle(client, "binary")  # answered with an error event
            else:
                hub.handle(client, text[: MAX_CLIENT_MESSAGE + 1])
    except WebSocketDisconnect:
        return
