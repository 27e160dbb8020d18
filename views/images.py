"""Uploaded pictures as a model's input: decoded with Pillow, converted to the dataset's
channels, resized to its shape, in the dataset's pixel range (no TensorFlow here)."""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.datasets import DatasetInfo

ACCEPTED = {"PNG", "JPEG"}


class BadImage(ValueError):
    """The upload is not a PNG or JPEG picture this server can read."""


def pixels_for(data: bytes, dataset: DatasetInfo) -> np.ndarray:
    """A uint8 array of the dataset's shape (height, width, channels), 0..255 mapped onto
    0..``pixel_max`` as the dataset stores its pictures."""
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
    scaled = np.asarray(resized, dtype=np.float32) * (dataset.pixel_max / 255.0)
    return np.round(scaled).astype(np.uint8).reshape(height, width, channels)
