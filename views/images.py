"""Uploaded pictures as a model's input: decoded with Pillow, converted to the dataset's
channels, resized to its shape, in the dataset's pixel range (no TensorFlow here)."""

import io

import numpy as np
from PIL import Image

from models.datasets import DatasetInfo

ACCEPTED = ["PNG", "JPEG"]
"""The only decoders an upload reaches."""

_UNREADABLE = (OSError, SyntaxError, ValueError)
"""What Pillow raises on a damaged or foreign file (found by fuzzing PNGs and JPEGs)."""
_NOT_READABLE = (
    "The upload is not a PNG or JPEG picture this server can read: it is empty, truncated or "
    "damaged, or another format such as GIF, BMP or WebP. Send a PNG or JPEG."
)


class BadImage(ValueError):
    """The upload is not a PNG or JPEG picture this server can read."""


class TooManyPixels(ValueError):
    """The picture has more pixels than this server decodes."""


def pixels_for(data: bytes, dataset: DatasetInfo, max_pixels: int) -> np.ndarray:
    """A uint8 array of the dataset's shape (height, width, channels), 0..255 mapped onto
    0..``pixel_max`` as the dataset stores its pictures. The header is read first: a picture
    of over ``max_pixels`` pixels is refused before any of it is decoded."""
    height, width, channels = dataset.shape
    image = _opened(data, max_pixels, dataset)
    if image.width * image.height > max_pixels:
        size = f"is {image.width}x{image.height} ({image.width * image.height:,} pixels)"
        raise _too_many(size, max_pixels, dataset)
    try:
        image.load()
    except _UNREADABLE:
        raise BadImage(_NOT_READABLE) from None
    converted = image.convert("L" if channels == 1 else "RGB")
    resized = converted.resize((width, height), Image.Resampling.LANCZOS)
    scaled = np.asarray(resized, dtype=np.float32) * (dataset.pixel_max / 255.0)
    return np.round(scaled).astype(np.uint8).reshape(height, width, channels)


def _opened(data: bytes, max_pixels: int, dataset: DatasetInfo) -> Image.Image:
    """The picture with its header read and none of its pixels (``Image.open`` is lazy)."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED)
    except Image.DecompressionBombError:  # Pillow's own guard, far above ``max_pixels``
        size = f"has over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels"
        raise _too_many(size, max_pixels, dataset) from None
    except _UNREADABLE:
        raise BadImage(_NOT_READABLE) from None


def _too_many(size: str, max_pixels: int, dataset: DatasetInfo) -> TooManyPixels:
    height, width, _ = dataset.shape
    return TooManyPixels(
        f"The picture {size}; this server decodes at most {max_pixels:,} "
        f"(CONVLAB_MAX_UPLOAD_PIXELS). Scale it down first: the model sees {width}x{height}."
    )
