"""Image decoding and host-side geometry: any file PIL reads -> RGB uint8 [size, size, 3].

Eval geometry: shorter side to size / crop_frac, centre crop. Train geometry (optional): an
Inception-style random resized crop, chosen on the original image and applied while decoding,
so a full-size JPEG is never decoded at full size when a smaller DCT scale covers the crop.
"""

import io
import math

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")

# (scale, ratio) of a random resized crop: area fraction range and aspect (w / h) range.
RandomCrop = tuple[tuple[float, float], tuple[float, float]]


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, 1) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth: scale the full range to 8 bits rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0
        elif img.mode == "I" and arr.max(initial=0) > 255:
            arr = arr / (65535.0 / 255.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")  # palette transparency survives only through RGBA
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_center_crop(img: Image.Image, size: int, crop_frac: float = 1.0) -> Image.Image:
    """Resizes the shorter side to round(size / crop_frac), then takes the central size x size."""
    short = round(size / crop_frac)
    w, h = img.size
    if (w, h) != (size, size):
        if min(w, h) != short:
            scale = short / min(w, h)
            new = (max(short, round(w * scale)), max(short, round(h * scale)))
            img = img.resize(new, Image.BILINEAR, reducing_gap=None if short < 64 else 3.0)
            w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float],
                           ratio: tuple[float, float], rng: np.random.Generator
                           ) -> tuple[int, int, int, int]:
    """(left, top, w, h) of an Inception-style crop of a width x height image.

    Up to 10 draws of an area fraction uniform in `scale` and an aspect ratio (w / h)
    log-uniform in `ratio`, the first that fits at a uniform position; after 10 misses the
    largest central box whose aspect is clamped into `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _draft_size(box: tuple[int, int, int, int], full: tuple[int, int], size: int
                ) -> tuple[int, int]:
    """The size to ask libjpeg for so the crop box still spans >= size pixels each way."""
    return (math.ceil(full[0] * size / box[2]), math.ceil(full[1] * size / box[3]))


def decode(data: str | bytes | np.ndarray, size: int, crop_frac: float = 1.0,
           random_crop: RandomCrop | None = None, rng: np.random.Generator | None = None
           ) -> np.ndarray:
    """A file path, encoded bytes or a decoded uint8 array -> RGB uint8 [size, size, 3].

    Without `random_crop`: eval geometry (`resize_center_crop`). With it: a box from
    `random_resized_crop_box` on the original (EXIF-oriented) size, drawn from `rng`, resized
    to size x size (bilinear, antialiased). Raises OSError/ValueError if unreadable.
    """
    if isinstance(data, np.ndarray):
        if random_crop is None and data.shape == (size, size, 3) and data.dtype == np.uint8:
            return data  # already at the eval geometry (cached and in-memory datasets)
        if data.ndim == 3 and data.shape[-1] == 1:
            data = data[..., 0]
        return _geometry(to_rgb(Image.fromarray(data)), size, crop_frac, random_crop, rng)
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        # EXIF orientations 5-8 swap width and height. A JPEG without an EXIF segment has none;
        # skipping the parse saves as much time as decoding a 32-px JPEG takes.
        no_exif = img.format == "JPEG" and "exif" not in img.info
        orientation = 1 if no_exif else img.getexif().get(0x0112, 1)
        box = None
        if random_crop is not None:
            full = img.size[::-1] if orientation in (5, 6, 7, 8) else img.size
            box = random_resized_crop_box(*full, *random_crop, rng)
            want = _draft_size(box, full, size)
            if full != img.size:
                want = want[::-1]
        else:
            want = (round(size / crop_frac),) * 2
        if img.format == "JPEG" and min(img.size[0] // want[0], img.size[1] // want[1]) >= 2:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale when that still covers the target: fast.
            img.draft("RGB", want)
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        img.load()
        img = to_rgb(img)
    if box is None:
        return np.asarray(resize_center_crop(img, size, crop_frac), dtype=np.uint8)
    # The draft may have shrunk the image: map the box onto the decoded pixels.
    sx, sy = img.size[0] / full[0], img.size[1] / full[1]
    left, top, w, h = box
    return crop_resize(img, (left * sx, top * sy, (left + w) * sx, (top + h) * sy), size)


def _geometry(img: Image.Image, size: int, crop_frac: float, random_crop: RandomCrop | None,
              rng: np.random.Generator | None) -> np.ndarray:
    if random_crop is None:
        return np.asarray(resize_center_crop(img, size, crop_frac), dtype=np.uint8)
    left, top, w, h = random_resized_crop_box(*img.size, *random_crop, rng)
    return crop_resize(img, (left, top, left + w, top + h), size)


def crop_resize(img: Image.Image, box: tuple[float, float, float, float], size: int
                ) -> np.ndarray:
    """The region `box` (left, top, right, bottom; rounded to whole pixels) of `img`, cut out and
    resized to size x size, bilinear and antialiased (PIL widens the filter when shrinking)."""
    box = tuple(round(v) for v in box)
    return np.asarray(img.crop(box).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def load_image(path: str, size: int, crop_frac: float = 1.0) -> np.ndarray:
    """Reads an image file as RGB uint8 [size, size, 3]; raises OSError/ValueError if unreadable."""
    return decode(path, size, crop_frac)

