"""Safe image decoding and normalisation: bytes in, an RGB working image out, or a clear reason for refusing it.

What `decode_image` guarantees: the format is one of `ACCEPTED_FORMATS`; the header's pixel count is checked
against `max_pixels` before any pixel is decoded (decompression bombs never reach memory); the file holds one
image (an animated or multi-page file is refused rather than silently cut to its first frame; an MPO's
extra frames are previews of its first, so MPO is read as that first image); the shape is one the model's
square frame can segment (shortest side >= `MIN_SIDE`, aspect ratio <= `MAX_ASPECT_RATIO`); the whole image
is decoded (truncated data is an error, not grey padding); EXIF orientation is applied; grayscale, palette,
CMYK, 16-bit and float images become 8-bit RGB; transparency is composited on white. `fit_shortest_side`
then downsizes so the shortest side is at most `max_side` (SA-1B: 1500 px), and `encode_jpeg` writes the
working JPEG.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_SIDE = 1500            # SA-1B: images downsampled so the shortest side is 1500 px (SAM paper, §5)
DEFAULT_MAX_PIXELS = 80_000_000    # refuse anything larger than 80 MP before decoding it
DEFAULT_JPEG_QUALITY = 90
ACCEPTED_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "MPO")
PREVIEW_FRAME_FORMATS = ("MPO",)   # extra frames are previews (or the stereo pair) of the first image
# The model sees an image resized so its long side fills a square frame (SAM: 1024 px, sam_tiny: 256 px, with
# embeddings at 1/16 and 1/8 of it). A 1 x 5000 px strip becomes less than one pixel high there, and the
# generator fails; below these limits an image is refused at ingest with the reason instead.
MIN_SIDE = 32                      # px, shortest side
MAX_ASPECT_RATIO = 20.0            # long side / short side: 20:1 keeps >= 12 px of sam_tiny's 256 px frame


class ImageRejected(ValueError):
    """The bytes are not an image the engine accepts; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """An image normalised to RGB: `pixels` is (H, W, 3) uint8; `source_format` and `source_size` (W, H) as read."""

    pixels: np.ndarray
    source_format: str
    source_size: tuple[int, int]
    source_mode: str

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode and normalise image bytes to (H, W, 3) uint8 RGB; raise `ImageRejected` with the reason."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    if not data:
        raise ImageRejected("zero-byte file")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own `max_pixels` check follows
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected(f"not a recognised image ({len(data)} bytes starting {data[:8]!r})") from None
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"over the pixel limit (decompression bomb guard): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any failure to parse the header is a reason to refuse
            raise ImageRejected(f"unreadable image header: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"unsupported image format {image.format} (accepted: {', '.join(ACCEPTED_FORMATS)})")
    if width <= 0 or height <= 0:
        raise ImageRejected(f"image has empty dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(f"over the pixel limit: {width}x{height} = {width * height} pixels > {max_pixels} "
                            f"(decompression bomb guard)")
    _check_shape(width, height)
    _check_single_image(image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Exception as exc:  # noqa: BLE001 - truncated streams raise OSError, broken ones anything
        raise ImageRejected(f"truncated or corrupt {image.format} data: {exc}") from None
    mode = image.mode
    image = _apply_orientation(image)
    pixels = _to_rgb(image)
    return DecodedImage(pixels=pixels, source_format=image.format or "", source_size=(width, height),
                        source_mode=mode)


def _check_shape(width: int, height: int) -> None:
    """Refuse a size the model's square frame cannot segment (see `MIN_SIDE`, `MAX_ASPECT_RATIO`)."""
    shortest, longest = min(width, height), max(width, height)
    if shortest < MIN_SIDE:
        raise ImageRejected(f"too small to segment: {width}x{height} (shortest side {shortest} px < {MIN_SIDE} px)")
    if longest / shortest > MAX_ASPECT_RATIO:
        raise ImageRejected(f"too elongated to segment: {width}x{height} (aspect ratio {longest / shortest:.1f}:1 "
                            f"> {MAX_ASPECT_RATIO:g}:1)")


def _check_single_image(image) -> None:
    """Refuse an animated or multi-page file: one file is one image (its other frames would be lost)."""
    if image.format in PREVIEW_FRAME_FORMATS:
        return
    try:
        frames = int(getattr(image, "n_frames", 1))
    except Exception as exc:  # noqa: BLE001 - counting frames walks the file: a broken one fails here
        raise ImageRejected(f"truncated or corrupt {image.format} data: {exc}") from None
    if frames > 1:
        raise ImageRejected(f"{image.format} holds {frames} frames (animated or multi-page): one image per file "
                            f"is expected; split the frames into separate files first")


def _apply_orientation(image):
    from PIL import ImageOps

    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored rather than refuse the image
        return image
    if oriented is not None and oriented is not image:
        oriented.format = image.format
        return oriented
    return image


def _to_rgb(image) -> np.ndarray:
    """Return (H, W, 3) uint8 RGB for any Pillow mode (16-bit and float scaled, alpha composited on white)."""
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _scale_to_uint8(np.asarray(image), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(image, dtype=np.uint8).copy()


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit or float grayscale to 0..255: by the type's range, or the data's when it is wider."""
    values = values.astype(np.float64)
    if mode == "F":
        low, high = (0.0, 1.0) if values.min() >= 0 and values.max() <= 1 else (values.min(), values.max())
    elif mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        low, high = 0.0, 255.0 if values.max() <= 255 else (65535.0 if values.max() <= 65535 else values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.rint((values - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)


def fit_shortest_side(pixels: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Return (H', W', 3) uint8 downsized (area-averaged) so min(H', W') <= max_side; smaller images are kept."""
    height, width = pixels.shape[:2]
    shortest = min(height, width)
    if max_side <= 0 or shortest <= max_side:
        return pixels
    new_w, new_h = working_size(width, height, max_side)
    import cv2

    return cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_AREA)


def working_size(width: int, height: int, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """Return the (width, height) ingest gives an image of this size: shortest side at most `max_side`."""
    shortest = min(width, height)
    if max_side <= 0 or shortest <= max_side:
        return width, height
    scale = max_side / shortest
    new_w = max_side if width == shortest else max(1, int(round(width * scale)))
    new_h = max_side if height == shortest else max(1, int(round(height * scale)))
    return new_w, new_h


def encode_jpeg(pixels: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Return baseline JPEG bytes for (H, W, 3) uint8 RGB pixels (deterministic for equal pixels)."""
    from PIL import Image

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB pixels, got {pixels.shape} {pixels.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


__all__ = ["DecodedImage", "ImageRejected", "decode_image", "fit_shortest_side", "working_size", "encode_jpeg",
           "DEFAULT_MAX_SIDE", "DEFAULT_MAX_PIXELS", "DEFAULT_JPEG_QUALITY", "ACCEPTED_FORMATS", "MIN_SIDE",
           "MAX_ASPECT_RATIO"]
