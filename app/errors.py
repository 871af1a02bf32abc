"""Errors a user can cause: each type carries its status; one handler renders problem+json."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
DATABASE_RETRY_SECONDS = 5

log = logging.getLogger(__name__)


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the fields to blame."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldProblem] = []


class ProblemError(Exception):
    status = 400
    title = "Bad request"
    code = "bad_request"

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        if code is not None:
            self.code = code

    def to_problem(self) -> Problem:
        errors = [FieldProblem(field=self.field, message=self.detail)] if self.field else []
        return Problem(
            type=f"urn:distillery:problem:{self.code}",
            title=self.title,
            status=self.status,
            detail=self.detail,
            code=self.code,
            errors=errors,
        )


class NotFound(ProblemError):
    status = 404
    title = "Not found"
    code = "not_found"


class InvalidInput(ProblemError):
    status = 422
    title = "Invalid input"
    code = "invalid_input"


class Conflict(ProblemError):
    status = 409
    title = "Conflict"
    code = "conflict"


class PayloadTooLarge(ProblemError):
    status = 413
    title = "Payload too large"
    code = "payload_too_large"


class TooManyRequests(ProblemError):
    status = 429
    title = "Too many requests"
    code = "too_many_requests"

    def __init__(
        self, detail: str, *, retry_after: int, field: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(detail, field=field, code=code)
        self.retry_after = retry_after


class ServiceUnavailable(ProblemError):
    status = 503
    title = "Service unavailable"
    code = "service_unavailable"


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


# Fields holding a discriminated union, and their discriminators: pydantic puts the chosen
# member's tag in an error's location (cross_domain.gaussian_noise.sigma), which names a
# type, not a field the user wrote.
UNION_FIELDS = {"cross_domain": "phi"}


def _field_problem(error: Mapping[str, Any]) -> FieldProblem:
    """One pydantic error as the field a user wrote and what is wrong with it."""
    parts: list[str] = []
    tag: str | None = None
    for p in error.get("loc", ()):
        part = str(p)
        if part in ("body", "query", "path", "form", "header") or "[" in part:
            continue
        if part[:1].isupper():  # a union member named by its model (TransferConfig), no field
            continue
        if parts and parts[-1] in UNION_FIELDS and tag is None:
            tag = part  # the union member's tag, right after the union's field
            continue
        parts.append(part)
    message = str(error["msg"])
    if error.get("type") == "json_invalid":
        # A body that is not JSON at all is located by its character offset: name the body.
        return FieldProblem(field="body", message=message)
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(str(error.get("ctx", {}).get("discriminator", "")).strip("'\""))
    elif error.get("type") == "extra_forbidden" and tag is not None and len(parts) >= 2:
        union = parts[-2]
        message = (
            f"{UNION_FIELDS[union]} {tag!r} does not use {parts[-1]}; remove it or choose the "
            f"{UNION_FIELDS[union]} that reads it"
        )
    return FieldProblem(field=".".join(p for p in parts if p) or "body", message=message)


async def _problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    if isinstance(exc, TooManyRequests):
        return problem_response(
            exc.to_problem(), headers={"Retry-After": str(max(1, exc.retry_after))}
        )
    return problem_response(exc.to_problem())


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[FieldProblem] = []
    for e in exc.errors():
        problem = _field_problem(e)
        if problem not in errors:
            errors.append(problem)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid request"
    return problem_response(
        Problem(
            type="urn:distillery:problem:invalid_input",
            title="Invalid input",
            status=422,
            detail=detail,
            code="invalid_input",
            errors=errors,
        )
    )


async def _data(_: Request, exc: Exception) -> JSONResponse:
    # The database refused a value the request carried (text holding a NUL character, a
    # number out of its column's range): the request's fault, not the service's.
    return problem_response(
        InvalidInput(
            "a value in the request cannot be used: text must not contain NUL characters "
            "and numbers must fit in 64 bits"
        ).to_problem()
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail) if exc.detail else "request failed"
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 400:
        # Starlette's only 400s: a body it could not decode (not UTF-8, a broken
        # multipart). The request's fault, answered as every other invalid body is.
        unreadable = InvalidInput(f"the request body cannot be read: {detail}", field="body")
        return problem_response(unreadable.to_problem())
    if exc.status_code == 405 and allowed_methods(request):
        headers["Allow"] = ", ".join(allowed_methods(request))
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem_response(
        Problem(
            type=f"urn:distillery:problem:{code}",
            title=detail,
            status=exc.status_code,
            detail=detail,
            code=code,
        ),
        headers=headers or None,
    )


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # The database did not answer (down, restarting, out of connections): nothing the
    # request did, and nothing was written; the client may retry.
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    down = ServiceUnavailable("the database is not answering; retry in a few seconds")
    return problem_response(
        down.to_problem(), headers={"Retry-After": str(DATABASE_RETRY_SECONDS)}
    )


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    # Anything else is a bug: logged with its traceback, answered as problem+json (not
    # Starlette's plain-text page), without the exception's text, which may hold internals.
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        Problem(
            type="urn:distillery:problem:internal_error",
            title="Internal error",
            status=500,
            detail="the service failed on this request (a bug, logged on the server: please "
            "report it); nothing in the request was wrong that it can name",
            code="internal_error",
        )
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error the API answers is problem+json (RFC 9457)."""
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(DataError, _data)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(InterfaceError, _database_down)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _internal)  # Starlette's server-error middleware


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path. Starlette's 405 names only the
    first route that matched the path, and GET and POST /v1/jobs are two routes."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m in _HTTP_METHODS}
    return sorted(methods)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": title}
    for status, title in (
        (401, "Unauthorized: the API key is missing or not valid"),
        (404, "Not found"),
        (413, "Upload too large"),
        (422, "Invalid input: `errors` names each field and its problem"),
        (429, "Too many requests (rate limit or active-job quota); see Retry-After"),
    )
}
