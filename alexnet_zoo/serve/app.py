"""The ASGI app of ``alexnet-zoo serve``: :func:`create_app` loads an index folder and its model
once and returns a FastAPI app with the JSON API under ``/api``, OpenAPI at ``/docs``, and the
page at ``/``.

Every error is the body of :mod:`~alexnet_zoo.serve.api_errors` with a 4xx status (FastAPI's
validation errors and unknown routes included), so one bad request never stops the service.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from alexnet_zoo.data.images import load_image
from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.retrieval.index import SearchHit
from alexnet_zoo.serve.access import BearerGate
from alexnet_zoo.serve.api_errors import ApiError, error_body
from alexnet_zoo.serve.schemas import DuplicatesResponse, ErrorBody, Health, IndexInfo, SearchResponse
from alexnet_zoo.serve.service import MAX_K, Service
from alexnet_zoo.serve.uploads import DEFAULT_MAX_UPLOAD, EXPECTED_TYPES, decode_upload, read_upload

__all__ = ["create_app"]

PAGE = files("alexnet_zoo.serve").joinpath("page.html").read_text(encoding="utf-8")
# the page may load nothing from elsewhere: its script and style are inline, pictures come from /api
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'")
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (401, 404, 413, 415, 422)}
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"neighbours to return, 1 to {MAX_K}")]


def _hits(hits: list[SearchHit]) -> list[dict[str, Any]]:
    return [{"id": h.id, "path": h.path, "score": h.score} for h in hits]


def _error_handlers(app: FastAPI) -> None:
    """Every error as the one body: ours, FastAPI's validation errors, and Starlette's 404 / 405."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(error_body(err.status, err.code, err.message, err.expected), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')} (got {e.get('input')!r})")
        expected = f"k a whole number from 1 to {MAX_K}; ids whole numbers; threshold a cosine in (0, 1]"
        return JSONResponse(error_body(422, "invalid_parameter", "; ".join(parts), expected), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return JSONResponse(error_body(err.status_code, code, f"{request.method} {request.url.path}: {err.detail}",
                                       "one of the routes listed at /docs"), status_code=err.status_code)


def _thumbnail(path: str, size: int) -> bytes:
    """A JPEG of an indexed picture within ``size`` x ``size``, decoded under the pixel limit."""
    img = load_image(path)
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def create_app(index_folder: str | os.PathLike, *, pretrained: str | None = None, precision: str = "auto",
               device: str | None = None, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD,
               max_batch: int = 32, max_wait: float = 0.005, progress: bool = True) -> FastAPI:
    """The service of ``index_folder``: index and model loaded now (``pretrained``: weights to use
    instead of the ones info.json names; ``precision`` and ``device`` as for extraction), uploads
    up to ``max_upload`` bytes, picture queries batched ``max_batch`` at a time waiting at most
    ``max_wait`` seconds for company; with ``token`` every request must carry it."""
    service = Service(index_folder, pretrained=pretrained, precision=precision, device=device, max_batch=max_batch,
                      max_wait=max_wait, progress=progress)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        await service.stop()

    app = FastAPI(title="alexnet-zoo serve", version="1", lifespan=lifespan, responses=ERRORS,
                  description=f"Image search over {service.index.count:,} pictures of {service.folder.name}")
    app.state.service = service
    _error_handlers(app)

    if token is not None:  # without one no middleware at all: each layer is event-loop time per request
        app.add_middleware(BearerGate, token=token)

    _routes(app, service, max_upload)
    return app


def _routes(app: FastAPI, service: Service, max_upload: int) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    @app.get("/api/health", response_model=Health, summary="the service is up")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "count": service.index.count, "pending": service.batcher.pending}

    @app.get("/api/info", response_model=IndexInfo, summary="model, weights, layer, count, kind and recall")
    async def info() -> dict[str, Any]:
        return service.info(max_upload)

    @app.post("/api/search", response_model=SearchResponse, summary="neighbours of an uploaded picture",
              openapi_extra={"requestBody": {"description": EXPECTED_TYPES, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def search(request: Request, k: K = 10) -> dict[str, Any]:
        data, name = await read_upload(request, max_upload)
        picture = await asyncio.to_thread(decode_upload, data, name)
        return {"k": k, "results": _hits(await service.by_picture(picture, k))}

    @app.get("/api/neighbours/{item}", response_model=SearchResponse, summary="neighbours of an indexed picture")
    async def neighbours(item: int, k: K = 10) -> dict[str, Any]:
        return {"query_id": item, "k": k, "results": _hits(await service.by_id(item, k))}

    @app.get("/api/duplicates", response_model=DuplicatesResponse, summary="near-duplicate groups at a threshold")
    async def duplicates(threshold: Annotated[float, Query(gt=0, le=1, description="a cosine in (0, 1]")] = 0.95,
                         grouping: str = "connected") -> dict[str, Any]:
        pairs, groups = await service.groups(threshold, grouping)
        return {"threshold": threshold, "grouping": grouping, "pairs": pairs,
                "groups": [{"members": [{"id": i, "path": service.index.paths[i], "score": s} for i, s in g]}
                           for g in groups]}

    @app.get("/api/thumbnail/{item}", response_class=Response, summary="a JPEG of an indexed picture",
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(item: int, size: Annotated[int, Query(ge=16, le=512)] = 160) -> Response:
        path = service.path(item)  # only the index's own paths are ever opened
        try:
            data = await asyncio.to_thread(_thumbnail, path, size)
        except UnreadableImage as err:
            raise ApiError(404, "picture_unavailable", f"indexed picture {item}: {err}",
                           "an indexed picture still readable where it was indexed") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
