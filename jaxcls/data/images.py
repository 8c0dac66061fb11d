"""Image decoding and host-side geometry: any file PIL reads -> RGB uint8 [size, size, 3]."""

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


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


def load_image(path: str, size: int, crop_frac: float = 1.0) -> np.ndarray:
    """Reads an image file as RGB uint8 [size, size, 3]; raises OSError/ValueError if unreadable."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            # Let libjpeg decode at reduced scale when the target is much smaller: much faster.
            img.draft("RGB", (round(size / crop_frac),) * 2)
        img = ImageOps.exif_transpose(img)
        img.load()
        img = to_rgb(img)
    return np.asarray(resize_center_crop(img, size, crop_frac), dtype=np.uint8)


def array_to_image(arr: np.ndarray, size: int, crop_frac: float = 1.0) -> np.ndarray:
    """Decoded uint8 array [H, W] or [H, W, C] (C in 1, 3, 4) -> RGB uint8 [size, size, 3]."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    img = to_rgb(Image.fromarray(arr))
    return np.asarray(resize_center_crop(img, size, crop_frac), dtype=np.uint8)
