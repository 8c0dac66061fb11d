"""Request bodies -> uint8 images at the model's size, with limits checked before any work:
body size while it streams in, pixel count from the header before decoding. Every rejection
is an InputError carrying an HTTP status and a one-line message."""

import io
import re

import numpy as np
from PIL import Image
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from jaxcls.data import images

RAW_TYPES = ("application/octet-stream",)  # besides image/*


class InputError(Exception):
    """A request the server rejects: `status` (4xx) and a one-line `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())


async def read_body(headers: Headers, stream, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes`."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise InputError(413, f"request body of {int(declared)} bytes is over the limit of "
                              f"{max_bytes} bytes (--max_request_bytes)")
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            raise InputError(413, f"request body is over the limit of {max_bytes} bytes "
                                  "(--max_request_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def split_images(headers: Headers, body: bytes, max_images: int
                       ) -> list[tuple[str, bytes]]:
    """[(name, encoded bytes)]: the raw body (image/*, application/octet-stream) or every file
    of a multipart/form-data body."""
    if not body:
        raise InputError(400, "empty body: send image bytes or multipart/form-data files")
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type in RAW_TYPES:
        return [("image", body)]
    if content_type != "multipart/form-data":
        raise InputError(415, f"unsupported content type {content_type or '(none)'!r}: send "
                              "image/*, application/octet-stream or multipart/form-data")

    async def stream():
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=max_images).parse()
    except MultiPartException as e:
        if e.message.startswith("Too many files"):
            raise InputError(413, f"more than {max_images} images in one request "
                                  "(--max_images)") from None
        raise InputError(400, f"bad multipart body: {e.message}") from None
    files = [(v.filename or k, await v.read()) for k, v in form.multi_items()
             if not isinstance(v, str)]
    await form.close()
    if not files:
        raise InputError(400, "multipart body holds no files")
    return files


def decode(number: int, name: str, data: bytes, size: int, crop_frac: float,
           max_pixels: int) -> np.ndarray:
    """Image `number` (1-based) of a request -> uint8 [size, size, 3], the eval geometry of
    jaxcls.predict; its pixel count is read from the header and checked first."""
    label = f"image {number} ({name})"
    if not data:
        raise InputError(400, f"{label} is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError as e:  # PIL's own limit, far above --max_pixels
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise InputError(413, f"{label} is too large: {pixels[1] if pixels else 'too many'} "
                              f"pixels, over the limit of {max_pixels} (--max_pixels)") from None
    except Image.UnidentifiedImageError:
        raise InputError(400, f"{label} is not a readable image (unknown format)") from None
    except Exception as e:  # PIL raises many types on non-image input
        raise InputError(400, f"{label} is not a readable image ({type(e).__name__}: {e})"
                         ) from None
    if width * height > max_pixels:
        raise InputError(413, f"{label} is too large: {width}x{height} pixels, over the limit "
                              f"of {max_pixels} (--max_pixels)")
    try:
        return images.decode(data, size, crop_frac)
    except Exception as e:  # truncated or corrupt pixel data
        raise InputError(400, f"{label} is not a readable image ({type(e).__name__}: {e})"
                         ) from None
