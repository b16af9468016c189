"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has the same shape, so a client (or an auditor's
script) handles them all in one place: ``type``, ``title``, ``status`` and a
one-line ``detail``; for bad parameters, ``errors`` names each parameter and
what is wrong with it. No stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from instrumetry.domain.errors import ConfigError, InstrumetryError, ServiceError

MEDIA_TYPE = "application/problem+json"
_log = logging.getLogger(__name__)


class ParameterError(BaseModel):
    """One parameter that was missing or wrong."""

    parameter: str = Field(description="Its name, e.g. `from`.", examples=["from"])
    location: str = Field(description="Where it was expected: query, path, header or body.")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(
        default="about:blank", description="Problem type; `about:blank`: see `title`."
    )
    title: str = Field(description="The HTTP status phrase.", examples=["Service Unavailable"])
    status: int = Field(description="The HTTP status code.", examples=[503])
    detail: str = Field(description="What went wrong, in one line.")
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[ParameterError] | None = Field(
        default=None, description="For invalid requests: every parameter that was wrong."
    )


class InvalidParameter(ConfigError):
    """A parameter that parsed but makes no sense, e.g. ``to`` before ``from``."""

    def __init__(self, parameter: str, message: str, location: str = "query") -> None:
        super().__init__(f"{location} parameter '{parameter}': {message}")
        self.error = ParameterError(parameter=parameter, location=location, message=message)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with.

    ``create_app`` moves their schema under ``application/problem+json``,
    which FastAPI's ``responses`` argument cannot express by itself.
    """
    return {
        status: {"model": Problem, "description": HTTPStatus(status).phrase} for status in statuses
    }


def problem(
    request: Request,
    status: int,
    detail: str,
    errors: list[ParameterError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _invalid(request: Request, errors: list[ParameterError]) -> JSONResponse:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = f"{first.location} parameter '{first.parameter}': {first.message}{more}"
    return problem(request, 422, detail, errors)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        location, *path = error.get("loc", ("request",))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        name = ".".join(str(part) for part in path) or str(location)
        errors.append(ParameterError(parameter=name, location=str(location), message=message))
    if not errors:
        return problem(request, 422, "the request is invalid")
    return _invalid(request, errors)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(request, exc.status_code, str(exc.detail), headers=exc.headers)  # e.g. Allow


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidParameter):
        return _invalid(request, [exc.error])
    status = 503 if isinstance(exc, ServiceError) else 422
    return problem(request, status, str(exc))


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    # The driver's message may name hosts and users: log it, tell the client less.
    _log.warning("database unavailable during %s: %s", request.url.path, exc)
    return problem(request, 503, "the database is unavailable; try again later")


async def _on_missing_table(request: Request, exc: Exception) -> JSONResponse:
    _log.warning("database schema incomplete during %s: %s", request.url.path, exc)
    return problem(
        request, 503, "the database schema is not migrated; run `instrumetry db migrate`"
    )


async def _on_bug(request: Request, exc: Exception) -> JSONResponse:
    # Starlette still re-raises after this, so the traceback reaches the server log.
    return problem(request, 500, "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem details object."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(InstrumetryError, _on_domain_error)
    app.add_exception_handler(psycopg.OperationalError, _on_database_error)
    app.add_exception_handler(psycopg.errors.UndefinedTable, _on_missing_table)
    app.add_exception_handler(Exception, _on_bug)


def problem_media_type(openapi: dict[str, Any]) -> dict[str, Any]:
    """Document error responses as ``application/problem+json`` rather than JSON."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[MEDIA_TYPE] = content.pop("application/json")
    return openapi
