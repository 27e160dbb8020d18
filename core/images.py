"""Uploaded pictures as a model's input: decoded with Pillow, converted to the dataset's
channels, resized to its shape and scaled to 0..1 as in training (no TensorFlow here)."""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.catalog import DatasetInfo

ACCEPTED = {"PNG", "JPEG"}


class BadImage(ValueError):
    """The upload is not a PNG or JPEG picture this server can read."""


def pixels_for(data: bytes, dataset: DatasetInfo) -> np.ndarray:
    """A float32 array of the dataset's shape (height, width, channels), values in 0..1."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise BadImage(f"the upload is not a readable PNG or JPEG image ({exc})") from None
    if image.format not in ACCEPTED:
        raise BadImage(f"the upload is a {image.format} image; send a PNG or JPEG")
    height, width, channels = dataset.shape
    converted = image.convert("L" if channels == 1 else "RGB")
    resized = converted.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    return pixels.reshape(height, width, channels)
