"""Shared fixtures: real photographs shipped with scikit-image, written as image files."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import skimage.data
import skimage.io
from PIL import Image

SKIMAGE_DATA = Path(skimage.data.__file__).parent

# Real photographs (not drawings or textures) in skimage/data/; all distinct pictures.
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "camera.png",
)

_ORIENTATION_TO_STORED = {  # how a camera stores an upright picture under each EXIF tag
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@functools.cache
def _photo_pixels(name: str) -> np.ndarray:
    pixels = skimage.io.imread(SKIMAGE_DATA / name)
    pixels.setflags(write=False)
    return pixels


class Photos:
    """Makes real image files in one folder: `photo("chelsea.png", fmt="WEBP")` -> Path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def image(
        self, name: str = "astronaut.png", *, size: tuple[int, int] | None = None
    ) -> Image.Image:
        """A photograph from skimage/data/ as a Pillow RGB image, resized when size is given."""
        img = Image.fromarray(_photo_pixels(name)).convert("RGB")
        return img if size is None else img.resize(size, Image.Resampling.LANCZOS)

    def save(
        self,
        img: Image.Image,
        filename: str | bytes,
        *,
        fmt: str | None = None,
        exif_orientation: int | None = None,
        **save_options: Any,
    ) -> Path | bytes:
        """Write img into the folder; with exif_orientation, store it as a camera would.

        The pixels are written turned so that applying the tag shows `img` upright.
        A bytes filename (not valid UTF-8, say) gives a bytes path back.
        """
        if exif_orientation is not None:
            img = img.transpose(_ORIENTATION_TO_STORED[exif_orientation])
            exif = Image.Exif()
            exif[0x0112] = exif_orientation
            save_options["exif"] = exif
        if isinstance(filename, bytes):
            path: Path | bytes = bytes(self.folder) + b"/" + filename
        else:
            path = self.folder / filename
        with open(path, "wb") as out:
            img.save(out, format=fmt or _format_for(filename), **save_options)
        return path

    def __call__(
        self,
        name: str = "astronaut.png",
        *,
        fmt: str = "JPEG",
        size: tuple[int, int] | None = None,
        mode: str | None = None,
        filename: str | None = None,
        exif_orientation: int | None = None,
        **save_options: Any,
    ) -> Path:
        """Write photo `name` as `fmt` (converted to `mode`, resized to `size`); return its path."""
        img = self.image(name, size=size)
        if mode is not None:
            img = img.convert(mode)
        if filename is None:
            filename = f"{Path(name).stem}_{len(list(self.folder.iterdir()))}.{fmt.lower()}"
        if fmt == "JPEG":
            save_options.setdefault("quality", 90)
        path = self.save(img, filename, fmt=fmt, exif_orientation=exif_orientation, **save_options)
        return cast(Path, path)


def _format_for(filename: str | bytes) -> str:
    suffix = Path(filename.decode("latin-1") if isinstance(filename, bytes) else filename).suffix
    return Image.registered_extensions()[suffix.lower()]


@pytest.fixture
def photo(tmp_path: Path) -> Photos:
    """Real photographs written as files of any format into tmp_path."""
    return Photos(tmp_path)
