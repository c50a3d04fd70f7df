"""The FastAPI app: OpenAI-compatible routes, limits, errors, and the chat page.

    app = create_app(model, tokenizer, model_name="tiny")   # uvicorn.run(app, host="127.0.0.1")

Every generation goes through ``mini_lm.generation`` on the engine's worker thread; request
parsing, prompt rendering and token counting run in the threadpool, so the event loop stays free.
The model is fixed at startup: no request field is ever used as a path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..generation import GenerationResult
from .engine import EngineClosed, GenerationEngine, Job, ServerBusy
from .errors import APIError, BodySizeLimit, add_error_handlers, error_body
from .limits import Prepared, RequestPreparer, ServeLimits
from .protocol import (
    ChatCompletionRequest,
    ChunkWriter,
    CompletionRequest,
    chat_response,
    completion_response,
    usage,
)
from .stops import StopStringFilter, cut_at_stop

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_END = object()  # posted to a stream's queue when its job is done


def create_app(
    model, tokenizer, model_name: str, limits: ServeLimits | None = None, api_key: str | None = None
) -> FastAPI:
    limits = limits or ServeLimits()
    engine = GenerationEngine(
        model,
        tokenizer,
        max_pending=limits.max_concurrent,
        max_batch_size=limits.max_batch_size,
        batch_wait_s=limits.batch_wait_ms / 1000,
    )
    preparer = RequestPreparer(model, tokenizer, model_name, limits)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        engine.start()
        yield
        await run_in_threadpool(engine.close)

    app = FastAPI(title="mini_lm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.add_middleware(BodySizeLimit, max_body_bytes=limits.max_body_bytes)
    add_error_handlers(app, limits.max_body_bytes)
    app.include_router(_api_router(engine, preparer, model_name, api_key))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, **engine.status()}

    return app


def _api_router(
    engine: GenerationEngine, preparer: RequestPreparer, model_name: str, api_key: str | None
) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_auth(api_key))])

    @router.get("/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "mini_lm"}],
        }

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        prepared = await run_in_threadpool(preparer.prepare_chat, body)
        writer = ChunkWriter(model_name, chat=True)
        return await _respond(engine, request, prepared, body, writer, chat_response)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        prepared = await run_in_threadpool(preparer.prepare_completion, body)
        writer = ChunkWriter(model_name, chat=False)
        return await _respond(engine, request, prepared, body, writer, completion_response)

    return router


def check_api_key(api_key: str | None) -> None:
    """Refuse, at start-up, a key no HTTP client can send: a header value is bytes, and clients (httpx,
    requests, curl) send visible ASCII. The key itself is never echoed: it is a secret."""
    bad = next((i for i, c in enumerate(api_key or "") if not "!" <= c <= "~"), None)
    if bad is not None:
        raise ValueError(
            f"--api-key (or $MINI_LM_API_KEY) must be printable ASCII without spaces; character {bad + 1} "
            "is not (clients send it as 'Authorization: Bearer <key>')"
        )


def _auth(api_key: str | None):
    check_api_key(api_key)
    expected = f"Bearer {api_key}".encode("ascii") if api_key else None

    async def check(authorization: str | None = Header(None)) -> None:
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes the client sent,
        # so any non-ASCII header is simply a wrong key (str compare_digest raises on non-ASCII).
        sent = (authorization or "").encode("latin-1")
        if expected and not secrets.compare_digest(sent, expected):
            raise APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )

    return check


async def _respond(engine, request: Request, prepared: Prepared, body, writer: ChunkWriter, build):
    if body.stream:
        return await _stream_response(engine, prepared, body, writer)
    job = Job(prepared.rows, prepared.settings)
    results = await _results_unless_hung_up(request, job, _submit(engine, job))
    if results is None:
        return Response(status_code=499)  # nginx's "client closed request": only the access log sees it
    choices = [_finish(r, prepared.stops, prepared.echo[i]) for i, r in enumerate(results)]
    completion_tokens = sum(len(r.token_ids) for r in results)
    return build(prepared.model_name, choices, usage(prepared.prompt_tokens, completion_tokens))


async def _results_unless_hung_up(request: Request, job: Job, future) -> list[GenerationResult] | None:
    """The job's results, or None if the client hangs up first. Then the job's stop flag is set, as
    a streamed job's is: queued, it is dropped; running, its rows end at the next token while the
    rows of the other requests in its batch generate on (``generate(cancel=...)``)."""
    result = asyncio.wrap_future(future)
    hang_up = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait((result, hang_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hang_up.cancel()
        if not result.done():  # the client went away (or this task was cancelled at shutdown)
            job.cancel.set()
            result.cancel()  # cancels the engine's future too while the job is still queued
    if result.cancelled():
        return None
    try:
        return result.result()
    except EngineClosed as err:
        raise APIError(503, str(err), kind="server_error") from err
    except Exception as err:  # logged by the engine; the server keeps serving
        raise APIError(500, f"generation failed: {err}", kind="server_error") from err


async def _hung_up(request: Request) -> None:
    """Return once the client closes its connection. The body is read by now, so the ASGI server's
    next message is http.disconnect (the same message StreamingResponse watches for)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _submit(engine: GenerationEngine, job: Job):
    try:
        return engine.submit(job)
    except ServerBusy as err:
        raise APIError(
            429,
            f"{err}; retry later (limit: mini-lm serve --max-concurrent)",
            code="server_busy",
            kind="rate_limit_error",
        ) from err
    except EngineClosed as err:
        raise APIError(503, str(err), kind="server_error") from err


def _finish(result: GenerationResult, stops: list[str], prefix: str = "") -> tuple[str, str]:
    """Result -> (text, finish_reason): 'stop' for a stop token or stop string, else 'length'."""
    text, hit = cut_at_stop(result.text, stops)
    return prefix + text, "stop" if hit or result.stopped else "length"


async def _stream_response(engine, prepared: Prepared, body, writer: ChunkWriter) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()  # bounded by max_tokens pieces

    def put(item) -> None:  # called from the worker thread
        loop.call_soon_threadsafe(queue.put_nowait, item)

    job = Job(prepared.rows, prepared.settings, on_piece=put)
    _submit(engine, job).add_done_callback(lambda _future: put(_END))
    events = _sse_events(job, queue, writer, prepared, body.include_usage())
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _sse_events(
    job: Job, queue: asyncio.Queue, writer: ChunkWriter, prepared: Prepared, include_usage: bool
):
    stops = StopStringFilter(prepared.stops)
    try:
        if (opening := writer.opening()) is not None:
            yield _sse(opening)
        if prepared.echo[0]:
            yield _sse(writer.piece(prepared.echo[0]))
        while (piece := await queue.get()) is not _END:
            if text := stops.feed(piece):
                yield _sse(writer.piece(text))
            if stops.stopped:
                job.cancel.set()  # generation ends at the next token; its last pieces are dropped
        try:
            result = job.future.result()[0]
        except Exception as err:  # headers are sent: report the error in the stream
            logger.exception("streamed generation failed")
            yield _sse(error_body(f"generation failed: {err}", "server_error"))
            return
        if tail := stops.flush():
            yield _sse(writer.piece(tail))
        yield _sse(writer.finish("stop" if stops.stopped or result.stopped else "length"))
        if include_usage:
            yield _sse(writer.usage(usage(prepared.prompt_tokens, len(result.token_ids))))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()  # the client went away (or we are done): stop generating for it
