"""An uploaded picture: its bytes read within a size limit, from a multipart form (field ``file``)
or a raw body (``image/*`` or ``application/octet-stream``), then checked and decoded by
:mod:`alexnet_zoo.data.images` (the pixel limit of every decoding path; a truncated file or a
non-image is a typed error naming the upload, never a half-grey picture).

The body is counted as it arrives and refused past the limit, so a client that lies in its
``Content-Length`` (or sends none) cannot make the service hold more than the limit.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from torch import Tensor

from alexnet_zoo.data.images import check_image_bytes, decode_image_bytes
from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.serve.api_errors import ApiError

__all__ = ["DEFAULT_MAX_UPLOAD", "MULTIPART_SLACK", "decode_upload", "read_upload"]

DEFAULT_MAX_UPLOAD = 20 * 2**20  # 20 MiB: above any camera JPEG, far below the decoder's file limit
MULTIPART_SLACK = 64 * 2**10  # a form's boundaries and headers around the file
_RAW_TYPES = ("image/", "application/octet-stream")
EXPECTED_TYPES = ("multipart/form-data with the picture in a field named 'file', or the picture itself as the "
                  "body with Content-Type image/* or application/octet-stream")


def _too_large(limit: int, what: str) -> ApiError:
    return ApiError(413, "upload_too_large", f"{what} is over the upload limit of {limit:,} bytes",
                    f"a picture of at most {limit:,} bytes (the server's --max-upload)")


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"the body ({int(declared):,} bytes declared)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "the body")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """(the picture's bytes, its name for messages) from a multipart or raw upload of at most ``limit``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        body = await _body(request, limit + MULTIPART_SLACK)

        async def replay() -> dict[str, object]:  # the form parser reads the body we already hold
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "the form has no file field named 'file'", EXPECTED_TYPES)
        data = await upload.read()
        name = f"upload {upload.filename!r}" if upload.filename else "the uploaded file"
        if len(data) > limit:
            raise _too_large(limit, name)
        return data, name
    if content_type.startswith(_RAW_TYPES):
        return await _body(request, limit), "the request body"
    raise ApiError(415, "unsupported_media_type", f"a body of Content-Type {content_type or '(none)'!r} is not a "
                   "picture upload", EXPECTED_TYPES)


def decode_upload(data: bytes, name: str) -> Tensor:
    """The upload as a uint8 RGB (3, H, W) tensor; an empty, non-image, truncated or bomb file is a
    422 :class:`ApiError` with the decoder's message (which names the limit it hit)."""
    if not data:
        raise ApiError(422, "empty_upload", f"{name} is empty", "a picture file (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    try:
        check_image_bytes(data, name)
        return decode_image_bytes(bytearray(data), name)
    except UnreadableImage as err:
        raise ApiError(422, "unreadable_image", str(err), "a complete picture file (JPEG, PNG, WebP, GIF, BMP, "
                       "TIFF) within the pixel limit") from None
