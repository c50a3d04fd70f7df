"""Errors in OpenAI's ``{"error": {...}}`` shape: our own, pydantic's, Starlette's, and oversized bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException


class APIError(Exception):
    """An error the client caused (4xx) or should see, in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": _encodable(message), "type": kind, "param": param, "code": code}}


def _encodable(text: str) -> str:
    """A message may quote client text; a lone surrogate in it would make the UTF-8 reply a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def add_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if err.status == 429 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_errors(err.errors())
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 413:
            message = body_too_large(max_body_bytes)
        elif err.status_code == 400 and err.__cause__ is not None:  # FastAPI could not parse the body
            message = f"request body is not valid JSON: {_first_line(err.__cause__)}"
        else:
            message = str(err.detail)
        return JSONResponse(error_body(message), status_code=err.status_code, headers=err.headers)


def _first_line(cause: BaseException) -> str:
    """UnicodeDecodeError('utf-8', ...) -> "'utf-8' codec can't decode byte 0xff in position 13: ...";
    RecursionError -> 'maximum recursion depth exceeded ...' (nesting too deep)."""
    text = str(cause).split(";")[0].strip() or type(cause).__name__
    return f"{text} (nesting too deep)" if isinstance(cause, RecursionError) else text


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(loc, ends_in_key: bool = False) -> str:
    """('body', 'messages', 0, 'content', 'str') -> 'messages[0].content' (union member tags dropped).

    ``ends_in_key``: the last part is a key the client sent (an unknown field), kept as sent:
    ('body', 'max-tokens') -> "'max-tokens'".
    """
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    last = parts.pop() if ends_in_key and parts else None
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part.lower() not in _TYPE_TAGS and not part[0].isupper():
            path += f".{part}" if path else part
    if last is not None:
        key = last if str(last).isidentifier() else repr(last)
        path += f".{key}" if path else key
    return path


def _without_other_members(errors: list[dict]) -> list[dict]:
    """A union field fails once per member. When one member got past the type check (a list that
    holds a bad item), its error explains the failure: drop the other members' type mismatches.

    prompt=['a', 5]: [prompt: 'should be a valid string', prompt[1]: 'should be a valid string']
    -> [prompt[1]: ...]; prompt=5 keeps both ('a valid string or a valid list').
    """
    paths = [_error_path(e) for e in errors]

    def explained_deeper(path: str) -> bool:
        return any(
            (p == path and not _is_type_mismatch(e)) or p.startswith((f"{path}.", f"{path}["))
            for p, e in zip(paths, errors)
        )

    kept = [e for p, e in zip(paths, errors) if not (_is_type_mismatch(e) and explained_deeper(p))]
    return kept or errors


def _is_type_mismatch(error: dict) -> bool:
    return error["type"].endswith("_type") or error["type"] == "model_attributes_type"


def describe_validation_errors(errors: list[dict]) -> tuple[str, str | None]:
    """pydantic errors -> (one readable message, the first bad field).

    [{'loc': ('body', 'n'), 'msg': 'Input should be a valid integer', ...}]
    -> ('invalid request: n: Input should be a valid integer', 'n')
    """
    first = errors[0]
    if first["type"] == "json_invalid":
        return (
            f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])} "
            f"at character {first['loc'][-1]}"
        ), None
    if tuple(first["loc"]) == ("body",) and first["type"] != "value_error":  # no body, or not an object
        return "request body must be a JSON object (Content-Type: application/json)", None
    errors = _without_other_members(errors)
    first = errors[0]
    problems: dict[str, list[str]] = {}  # field -> messages (a union field fails once per member)
    for error in errors:
        msg = (
            "unsupported field"
            if error["type"] == "extra_forbidden"
            else error["msg"].removeprefix("Value error, ")
        )
        messages = problems.setdefault(_error_path(error), [])
        if msg not in messages:
            messages.append(msg)
    lines = [f"{path}: {' or '.join(msgs)}" if path else " or ".join(msgs) for path, msgs in problems.items()]
    return "invalid request: " + "; ".join(lines[:4]), _error_path(first) or None


def _error_path(error: dict) -> str:
    return _field_path(error["loc"], ends_in_key=error["type"] == "extra_forbidden")


class BodySizeLimit:
    """413 once a request body exceeds the limit: at once for a declared Content-Length (before
    reading anything), else as chunks arrive (the HTTPException reaches the API's error handler).
    """

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:  # not "²"
            response = JSONResponse(error_body(body_too_large(self.max_body_bytes)), status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise HTTPException(413)
            return message

        await self.app(scope, counting_receive, send)


def body_too_large(limit: int) -> str:
    return (
        f"request body is larger than this server's limit of {limit} bytes (mini-lm serve --max-body-bytes)"
    )
