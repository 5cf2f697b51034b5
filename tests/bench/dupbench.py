"""A duplicate benchmark from real photographs: the generator and the scoring.

Originals are non-overlapping tiles (and whole small photos) of the real photographs that
installed packages ship: scikit-image's data images, and scikit-learn's and matplotlib's sample
images when those are installed. Copies are made of random originals by each transform of
TRANSFORMS; the ground truth is written as groups (one per original) in truth.json.

Used by tests/bench/accuracy.py (the full benchmark, which prints tables) and by
tests/test_accuracy.py (a small one in the suite). Everything is reproducible from the seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

# Real photographs (no drawings, no synthetic test charts). motorcycle_right.png is left out:
# it is the other half of a stereo pair, nearly the same picture as motorcycle_left.png.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
)  # fmt: skip
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)

FLAT_STD = 12.0  # a tile this flat (std of gray 0-255) is sky or background, not a picture
# A tile more than this share near-black (< 16 of 255) is mostly the black surround of the
# retina photo or the deep-field sky: such tiles are each other turned or mirrored (a black
# wedge on an orange disk edge), so they are not distinct pictures for rotation matching.
DARK_SHARE = 0.4
# Two tiles whose 64x64 grayscales correlate above this in one of the eight orientations are
# the same picture turned (tiles mirrored across a round photo's axis): only the first counts.
TWIN_CORRELATION = 0.95

EXACT, PIXEL, NEAR, HARD = "exact", "pixel", "near", "hard"


@dataclass(frozen=True)
class Source:
    package: str
    name: str
    path: Path


def sources() -> list[Source]:
    """The photographs available in this environment (printed by the benchmark)."""
    found: list[Source] = []
    for package, folder, names in (
        ("scikit-image", _package_folder("skimage.data", "."), SKIMAGE_PHOTOS),
        ("scikit-learn", _package_folder("sklearn.datasets", "images"), SKLEARN_PHOTOS),
        ("matplotlib", _matplotlib_samples(), MATPLOTLIB_PHOTOS),
    ):
        if folder is None:
            continue
        found += [Source(package, n, folder / n) for n in names if (folder / n).exists()]
    return found


def _package_folder(module: str, sub: str) -> Path | None:
    spec = find_spec(module.split(".")[0]) and find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return (Path(spec.origin).parent / sub).resolve()


def _matplotlib_samples() -> Path | None:
    if find_spec("matplotlib") is None:
        return None
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


# --- originals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    label: str  # source name and tile position
    image: Image.Image


def originals(
    count: int, rng: np.random.Generator, *, tile: int = 112, sizes: tuple[int, int] = (320, 720)
) -> list[Original]:
    """`count` distinct pictures: tiles of `tile` px cut without overlap from every photo (a
    photo too small for four tiles is used whole), flat ones dropped, shuffled, each scaled to
    a long side drawn from `sizes`."""
    pool: list[Original] = []
    for source in sources():
        photo = Image.open(source.path).convert("RGB")
        pool += [Original(f"{source.name}{where}", img) for where, img in _tiles(photo, tile)]
    pool = [o for o in pool if _is_distinct_picture(o.image)]
    order = rng.permutation(len(pool))
    shuffled = [pool[i] for i in order]
    chosen = [shuffled[i] for i in _without_twins([o.image for o in shuffled])[:count]]
    if len(chosen) < count:
        raise ValueError(f"only {len(chosen)} distinct tiles available, {count} wanted")
    return [Original(o.label, _scaled(o.image, int(rng.integers(*sizes)))) for o in chosen]


def _is_distinct_picture(img: Image.Image) -> bool:
    gray = np.asarray(img.convert("L"), dtype=float)
    return gray.std() >= FLAT_STD and (gray < 16).mean() <= DARK_SHARE


def _without_twins(images: list[Image.Image]) -> list[int]:
    """Indexes of the images kept, in order, leaving out any that is a turned twin of one
    kept before it (correlation above TWIN_CORRELATION in some orientation)."""
    turns = [lambda a: a, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2),
             lambda a: np.rot90(a, 3), np.fliplr, np.flipud, lambda a: a.T,
             lambda a: np.rot90(a, 2).T]  # fmt: skip
    small = [np.asarray(img.convert("L").resize((64, 64), Image.Resampling.BOX), float)
             for img in images]  # fmt: skip
    unit = [[_unit(turn(a)) for a in small] for turn in turns]
    upright = np.stack(unit[0])
    similar = np.max([upright @ np.stack(turned).T for turned in unit], axis=0)
    kept: list[int] = []
    for i in range(len(images)):
        if all(similar[i, j] < TWIN_CORRELATION for j in kept):
            kept.append(i)
    return kept


def _unit(pixels: np.ndarray) -> np.ndarray:
    centred = (pixels - pixels.mean()).ravel()
    norm = np.linalg.norm(centred)
    return centred / norm if norm else centred


def _tiles(photo: Image.Image, tile: int) -> Iterable[tuple[str, Image.Image]]:
    across, down = photo.width // tile, photo.height // tile
    if across * down < 4:
        yield "", photo
        return
    for row in range(down):
        for col in range(across):
            box = (col * tile, row * tile, (col + 1) * tile, (row + 1) * tile)
            yield f"[{row},{col}]", photo.crop(box)


def _scaled(img: Image.Image, long_side: int) -> Image.Image:
    scale = long_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


# --- transforms ------------------------------------------------------------------------------

Make = Callable[[Path, Image.Image, np.random.Generator], tuple[bytes, str]]


@dataclass(frozen=True)
class Transform:
    name: str
    kind: str  # EXACT, PIXEL, NEAR or HARD
    make: Make  # (original file, its pixels, rng) -> (bytes, file suffix)
    note: str


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _same_format(path: Path, img: Image.Image) -> tuple[bytes, str]:
    """Save as the original's format: JPEG quality 90, or PNG."""
    if path.suffix == ".jpg":
        return _encode(img.convert("RGB"), "JPEG", quality=90), ".jpg"
    return _encode(img, "PNG"), ".png"


def _exif(software: str) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "dupbench camera"  # Make
    exif[0x0131] = software  # Software
    return exif.tobytes()


def _jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG split into SOI, its marker segments up to SOS, and the rest (entropy data)."""
    parts, at = [data[:2]], 2
    while at < len(data) and data[at] == 0xFF and data[at + 1] != 0xDA:
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        parts.append(data[at : at + 2 + length])
        at += 2 + length
    parts.append(data[at:])
    return parts


def _without_app1(data: bytes) -> bytes:
    return b"".join(p for p in _jpeg_segments(data) if not p.startswith(b"\xff\xe1"))


def _with_app1(data: bytes, exif: bytes) -> bytes:
    body = b"Exif\x00\x00" + exif
    segment = b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body
    stripped = _jpeg_segments(_without_app1(data))
    return stripped[0] + segment + b"".join(stripped[1:])


def byte_copy(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    return path.read_bytes(), path.suffix


def png_reencode(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    with Image.open(path) as decoded:
        decoded.load()
        return _encode(decoded, "PNG", compress_level=int(rng.integers(1, 10))), ".png"


def exif_added(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """Other EXIF on the same pixels: a new APP1 segment in the JPEG bytes (no re-encode), or
    an eXIf chunk in a PNG."""
    exif = _exif(f"editor {int(rng.integers(1000))}")
    if path.suffix == ".jpg":
        return _with_app1(path.read_bytes(), exif), ".jpg"
    with Image.open(path) as decoded:
        decoded.load()
        return _encode(decoded, "PNG", exif=exif), ".png"


def exif_stripped(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    if path.suffix == ".jpg":
        return _without_app1(path.read_bytes()), ".jpg"
    with Image.open(path) as decoded:  # PNG originals carry no EXIF: drop the text chunks
        decoded.load()
        return _encode(decoded, "PNG", compress_level=9), ".png"


def resized(scale: float) -> Make:
    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        return _same_format(path, img.resize(size, Image.Resampling.LANCZOS))

    return make


def jpeg(quality: int) -> Make:
    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        return _encode(img, "JPEG", quality=quality), ".jpg"

    return make


def other_format(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """A JPEG saved as PNG, a PNG saved as JPEG (quality 90)."""
    if path.suffix == ".jpg":
        return _encode(img, "PNG"), ".png"
    return _encode(img, "JPEG", quality=90), ".jpg"


def webp(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    return _encode(img, "WEBP", quality=80), ".webp"


def enhanced(enhancer: type, factor: float) -> Make:
    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        return _same_format(path, enhancer(img).enhance(factor))

    return make


def gamma(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    value = float(rng.choice([0.8, 1.25]))
    table = [round(255 * (i / 255) ** value) for i in range(256)] * 3
    return _same_format(path, img.point(table))


def crop_sides(most: float) -> Make:
    """Cut up to `most` of the width (height) off each side, each side drawn at random."""

    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        cut = rng.uniform(0, most, 4)
        box = (
            round(img.width * cut[0]),
            round(img.height * cut[1]),
            round(img.width * (1 - cut[2])),
            round(img.height * (1 - cut[3])),
        )
        return _same_format(path, img.crop(box))

    return make


def crop_share(removed: float) -> Make:
    """Keep (1 - removed) of the width and of the height, at a random place."""

    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        width, height = round(img.width * (1 - removed)), round(img.height * (1 - removed))
        left = int(rng.integers(0, img.width - width + 1))
        top = int(rng.integers(0, img.height - height + 1))
        return _same_format(path, img.crop((left, top, left + width, top + height)))

    return make


def blurred(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    return _same_format(path, img.filter(ImageFilter.GaussianBlur(1)))


def watermark(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """White text with a dark outline in a random corner, about 1/20 of the height tall."""
    marked = img.copy()
    draw = ImageDraw.Draw(marked)
    font = ImageFont.load_default(size=max(8, img.height // 20))
    text = "(c) dupbench 2024"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=1)
    margin = max(2, img.height // 50)
    corner = int(rng.integers(4))
    x = margin if corner % 2 == 0 else img.width - (right - left) - margin
    y = margin if corner < 2 else img.height - (bottom - top) - margin
    draw.text((x, y), text, fill="white", font=font, stroke_width=1, stroke_fill="black")
    return _same_format(path, marked)


def grayscale(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    return _same_format(path, img.convert("L"))


def transposed(method: Image.Transpose) -> Make:
    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        return _same_format(path, img.transpose(method))

    return make


def letterbox(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """Black bars to a 16:9 frame (bars above and below), or to 9:16 for a wide picture."""
    if img.width / img.height < 16 / 9:
        frame = (img.width, round(img.width * 9 / 16))
        if frame[1] <= img.height:
            frame = (round(img.height * 16 / 9), img.height)
    else:
        frame = (img.width, round(img.width * 16 / 9))
    frame = (max(frame[0], img.width), max(frame[1], img.height))
    if frame == img.size:  # already 16:9: bars all round instead
        frame = (round(img.width * 1.15), round(img.height * 1.15))
    canvas = Image.new("RGB", frame, "black")
    canvas.paste(img, ((frame[0] - img.width) // 2, (frame[1] - img.height) // 2))
    return _same_format(path, canvas)


def pad_square(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """Padding to a square of 1.1x the long side, white, black or gray, the picture centred."""
    side = round(max(img.size) * 1.1)
    colour = tuple([int(rng.choice([0, 128, 255]))] * 3)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return _same_format(path, canvas)


def screenshot(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """The picture as a screenshot shows it (issue 11): in an image viewer's window (a title
    bar and a toolbar of other colours, uneven dark bars) or on a phone (a status bar, the
    picture fitted to the width, a navigation bar, black elsewhere). Saved as PNG."""
    if rng.random() < 0.5:
        width = round(img.width * rng.uniform(1.2, 1.5))
        title, tools = max(12, width // 28), max(12, width // 24)
        height = title + tools + round(img.height * rng.uniform(1.08, 1.3))
        canvas = Image.new("RGB", (width, height), (48, 48, 48))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, 0, width, title), fill=(30, 58, 95))
        font = ImageFont.load_default(size=max(8, title * 2 // 3))
        draw.text((8, title // 6), f"{path.name} - Image Viewer", fill="white", font=font)
        draw.rectangle((0, title, width, title + tools), fill=(224, 224, 224))
        for i in range(6):  # the toolbar's buttons
            x = 6 + i * (tools + 4)
            draw.rectangle((x, title + 3, x + tools - 6, title + tools - 3), fill=(150, 150, 160))
        free_x, free_y = width - img.width, height - title - tools - img.height
        x = int(free_x * rng.uniform(0.25, 0.75))  # uneven bars left and right
        y = title + tools + int(free_y * rng.uniform(0.3, 0.7))
        canvas.paste(img, (x, y))
    else:
        width = img.width
        height = round(width * 19.5 / 9)
        fitted = img if img.height <= height * 0.8 else _scaled(img, round(height * 0.8))
        canvas = Image.new("RGB", (width, height), "black")
        draw = ImageDraw.Draw(canvas)
        status = max(10, height // 30)
        font = ImageFont.load_default(size=max(8, status * 2 // 3))
        draw.text((8, status // 6), "12:34", fill="white", font=font)
        draw.rectangle((width - 40, 4, width - 14, status - 4), outline="white")  # battery
        draw.rectangle((width - 38, 6, width - 22, status - 6), fill="white")
        nav = max(12, height // 22)
        draw.rectangle((0, height - nav, width, height), fill=(20, 20, 20))
        for i, cx in enumerate((width // 4, width // 2, 3 * width // 4)):
            r = nav // 4
            shape = (cx - r, height - nav // 2 - r, cx + r, height - nav // 2 + r)
            (draw.ellipse if i == 1 else draw.rectangle)(shape, outline=(200, 200, 200))
        y = status + int((height - status - nav - fitted.height) * rng.uniform(0.35, 0.5))
        canvas.paste(fitted, ((width - fitted.width) // 2, y))
    return _encode(canvas, "PNG"), ".png"


def rotated(degrees: float) -> Make:
    def make(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
        turned = img.rotate(degrees, Image.Resampling.BICUBIC, expand=False, fillcolor="black")
        return _same_format(path, turned)

    return make


T = Transform
TRANSFORMS: tuple[Transform, ...] = (
    T("byte_copy", EXACT, byte_copy, "the same bytes"),
    T("png_reencode", PIXEL, png_reencode, "decoded, saved as PNG (random compress level)"),
    T("exif_added", PIXEL, exif_added, "other EXIF, same pixels (JPEG: APP1 swapped in bytes)"),
    T("exif_stripped", PIXEL, exif_stripped, "EXIF removed, same pixels"),
    T("resize50", NEAR, resized(0.5), "50% (Lanczos)"),
    T("resize25", NEAR, resized(0.25), "25% (Lanczos)"),
    T("resize150", NEAR, resized(1.5), "150% (Lanczos)"),
    T("jpeg60", NEAR, jpeg(60), "JPEG quality 60"),
    T("jpeg30", NEAR, jpeg(30), "JPEG quality 30"),
    T("png_or_jpeg", NEAR, other_format, "JPEG original as PNG, PNG original as JPEG q90"),
    T("webp", NEAR, webp, "WebP quality 80"),
    T("bright+10", NEAR, enhanced(ImageEnhance.Brightness, 1.1), "brightness +10%"),
    T("bright-10", NEAR, enhanced(ImageEnhance.Brightness, 0.9), "brightness -10%"),
    T("contrast+10", NEAR, enhanced(ImageEnhance.Contrast, 1.1), "contrast +10%"),
    T("contrast-10", NEAR, enhanced(ImageEnhance.Contrast, 0.9), "contrast -10%"),
    T("gamma", NEAR, gamma, "gamma 0.8 or 1.25"),
    T("crop5", NEAR, crop_sides(0.05), "0-5% cut off each side"),
    T("blur1", NEAR, blurred, "Gaussian blur radius 1"),
    T("watermark", NEAR, watermark, "text, 1/20 of the height, in a corner"),
    T("grayscale", NEAR, grayscale, "converted to grayscale"),
    T("rot90", HARD, transposed(Image.Transpose.ROTATE_90), "rotated 90"),
    T("rot180", HARD, transposed(Image.Transpose.ROTATE_180), "rotated 180"),
    T("rot270", HARD, transposed(Image.Transpose.ROTATE_270), "rotated 270"),
    T("flip", HARD, transposed(Image.Transpose.FLIP_LEFT_RIGHT), "mirrored left-right"),
    T("crop20", HARD, crop_share(0.20), "80% of width and height kept, anywhere"),
    T("letterbox", HARD, letterbox, "black bars to 16:9 (or 9:16)"),
    T("pad_square", HARD, pad_square, "padded to a square, white/black/gray"),
    T("rot10", HARD, rotated(10), "rotated 10 degrees, black corners"),
    T("screenshot", HARD, screenshot, "in a viewer window (title bar, uneven bars) or a phone"),
)


# --- families of look-alike originals (issue 11) -----------------------------------------------
# Distinct pictures that share a coarse layout, each with copies a person calls the same:
# sprites (a glyph of one font in one colour, drawn only through alpha) and diagrams (one
# layout of boxes and arrows, differing only in their words). A pair between two of them is a
# false pair like any other.

SPRITE_GLYPHS = "ABCDEFGHJKMNPRSTUVWXYZabdefghkmnqrtuy234"  # no I/l/1, O/0/o look-alikes
SPRITE_COLOURS = ((0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 90, 200), (40, 150, 60))
DIAGRAM_WORDS = (
    "input", "decode", "resize", "hash", "index", "query", "store", "alert", "socket", "watch",
    "group", "report", "train", "label", "split", "model", "export", "review", "ignore", "keep",
)  # fmt: skip


def sprite(glyph: str, colour: tuple[int, int, int]) -> Image.Image:
    """A 160 px RGBA sprite: one glyph in one colour, its drawing all in the alpha."""
    mask = Image.new("L", (160, 160), 0)
    draw = ImageDraw.Draw(mask)
    font = ImageFont.load_default(size=120)
    left, top, right, bottom = draw.textbbox((0, 0), glyph, font=font)
    draw.text(((160 - right - left) / 2, (160 - bottom - top) / 2), glyph, fill=255, font=font)
    out = Image.new("RGBA", mask.size, (*colour, 255))
    out.putalpha(mask)
    return out


def diagram(words: list[str]) -> Image.Image:
    """A 480x320 diagram: a title and three boxes joined by arrows, the same layout always."""
    img = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=22)
    draw.text((20, 14), f"{words[0]} pipeline", fill="black", font=font)
    for i, word in enumerate(words[1:4]):
        x = 20 + i * 160
        draw.rectangle((x, 130, x + 120, 200), outline="black", width=3, fill=(235, 240, 250))
        draw.text((x + 10, 152), word, fill="black", font=font)
        if i < 2:
            draw.line((x + 120, 165, x + 160, 165), fill="black", width=3)
            draw.polygon([(x + 160, 165), (x + 150, 158), (x + 150, 172)], fill="black")
    draw.text((20, 260), f"step {words[4]} after {words[5]}", fill=(80, 80, 80), font=font)
    return img


def family_originals(count: int, rng: np.random.Generator) -> list[tuple[str, Image.Image]]:
    """`count` sprites and `count` diagrams, as (family, picture)."""
    glyphs = rng.permutation(len(SPRITE_GLYPHS))[:count]
    out = [
        ("sprite", sprite(SPRITE_GLYPHS[g], SPRITE_COLOURS[int(rng.integers(len(SPRITE_COLOURS)))]))
        for g in glyphs
    ]
    for _ in range(count):
        words = [DIAGRAM_WORDS[i] for i in rng.permutation(len(DIAGRAM_WORDS))[:6]]
        out.append(("diagram", diagram(words)))
    return out


def sprite_resize(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    return _encode(img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS),
                   "PNG"), ".png"  # fmt: skip


def sprite_recolour(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    colour = SPRITE_COLOURS[int(rng.integers(len(SPRITE_COLOURS)))]
    out = Image.new("RGBA", img.size, (*colour, 255))
    out.putalpha(img.getchannel("A"))
    return _encode(out, "PNG"), ".png"


def sprite_flat(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """Flattened and saved as JPEG, as an export for the web does: on white, or on black for
    a light sprite (on white it would vanish)."""
    light = sum(img.getpixel((0, 0))[:3]) > 3 * 160
    back = Image.new("RGBA", img.size, "black" if light else "white")
    flat = Image.alpha_composite(back, img).convert("RGB")
    return _encode(flat, "JPEG", quality=90), ".jpg"


def diagram_copy(path: Path, img: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    small = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    return _encode(small, "JPEG", quality=85), ".jpg"


FAMILY_TRANSFORMS: dict[str, tuple[Transform, ...]] = {
    "sprite": (
        T("sprite_resize", NEAR, sprite_resize, "sprite at 50%, RGBA PNG"),
        T("sprite_recolour", NEAR, sprite_recolour, "sprite in another colour"),
        T("sprite_flat", NEAR, sprite_flat, "sprite flattened on white, JPEG q90"),
    ),
    "diagram": (T("diagram_copy", NEAR, diagram_copy, "diagram at 75%, JPEG q85"),),
}
ALL_TRANSFORMS = TRANSFORMS + tuple(t for ts in FAMILY_TRANSFORMS.values() for t in ts)
TRANSFORM_BY_NAME = {t.name: t for t in ALL_TRANSFORMS}
ROTATE_FLIP = ("rot90", "rot180", "rot270", "flip")
BORDERS = ("letterbox", "pad_square", "screenshot")


# --- the benchmark folder --------------------------------------------------------------------


@dataclass
class Benchmark:
    folder: Path
    # file name -> (group id, transform name); originals have transform "original"
    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)
    description: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # per group: the photo and tile it is

    def kind(self, name: str) -> str:
        transform = self.files[name][1]
        return "original" if transform == "original" else TRANSFORM_BY_NAME[transform].kind


def generate(
    folder: Path,
    *,
    seed: int = 6,
    count: int = 300,
    copies: int = 60,
    tile: int = 112,
    sizes: tuple[int, int] = (320, 720),
    jpeg_share: float = 0.7,
    families: int = 0,
) -> Benchmark:
    """Write `count` originals and, for `copies` random originals per transform, a copy; the
    ground truth goes to truth.json. File names are random, so no order favours any method."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bench = Benchmark(folder)
    pictures = originals(count, rng, tile=tile, sizes=sizes)
    paths = []
    for group, original in enumerate(pictures):
        as_jpeg = rng.random() < jpeg_share
        data = (
            _encode(original.image, "JPEG", quality=92, exif=_exif("dupbench"))
            if as_jpeg
            else _encode(original.image, "PNG")
        )
        name = _write(folder, rng, data, ".jpg" if as_jpeg else ".png")
        bench.files[name] = (group, "original")
        bench.groups.append([name])
        bench.labels.append(original.label)
        paths.append(folder / name)
    for transform in TRANSFORMS:
        for group in sorted(rng.choice(count, size=min(copies, count), replace=False)):
            data, suffix = transform.make(paths[group], pictures[group].image, rng)
            name = _write(folder, rng, data, suffix)
            bench.files[name] = (int(group), transform.name)
            bench.groups[group].append(name)
    # After the photographs' copies, so a benchmark without families is unchanged.
    for family, picture in family_originals(families, rng):
        group = len(bench.groups)
        name = _write(folder, rng, _encode(picture, "PNG"), ".png")
        bench.files[name] = (group, "original")
        bench.groups.append([name])
        bench.labels.append(family)
        for transform in FAMILY_TRANSFORMS[family]:
            data, suffix = transform.make(folder / name, picture, rng)
            copy = _write(folder, rng, data, suffix)
            bench.files[copy] = (group, transform.name)
            bench.groups[group].append(copy)
    used = {o.label.split("[")[0] for o in pictures}
    sources_used = sorted(f"{s.package}:{s.name}" for s in sources() if s.name in used)
    bench.description = [
        f"dupbench seed={seed} originals={count} copies/transform={min(copies, count)} "
        f"tile={tile}px long side {sizes[0]}-{sizes[1] - 1}px, {jpeg_share:.0%} JPEG q92 + EXIF,"
        f" the rest PNG; {len(bench.files)} files",
        f"originals: non-overlapping {tile}px tiles of photos with 4+ tiles (smaller photos whole),"
        f" without flat tiles (gray std < {FLAT_STD:g}) or mostly near-black ones"
        f" (> {DARK_SHARE:.0%} below 16: the retina surround, the deep-field sky), nor turned"
        f" twins of another (64 px correlation > {TWIN_CORRELATION} in some orientation)",
        "photographs: " + ", ".join(sources_used),
        f"families: {families} sprites (glyphs in one colour through alpha) and {families}"
        " diagrams (one layout, other words), each with its copies",
    ]
    truth = {
        "description": bench.description,
        "files": bench.files,
        "groups": bench.groups,
        "labels": bench.labels,
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    return bench


def _write(folder: Path, rng: np.random.Generator, data: bytes, suffix: str) -> str:
    name = hashlib.blake2b(rng.bytes(16), digest_size=6).hexdigest() + suffix
    (folder / name).write_bytes(data)
    return name


def load(folder: Path) -> Benchmark:
    truth = json.loads((folder / "truth.json").read_text())
    files = {name: (group, transform) for name, (group, transform) in truth["files"].items()}
    labels = truth.get("labels", [])
    return Benchmark(folder, files, truth["groups"], truth["description"], labels)


def remove(folder: Path) -> None:
    if folder.exists() and (folder / "truth.json").exists():
        shutil.rmtree(folder)


# --- scoring ---------------------------------------------------------------------------------


@dataclass
class Score:
    """Pairwise results of one method at one setting."""

    recall: dict[str, float]  # per transform
    precision: dict[str, float]  # per transform: its true pairs / all its pairs found
    false_pairs: int  # pairs found between files of different originals
    near_f1: float
    near_recall: float
    near_precision: float
    found: int
    near_false: int  # false pairs among originals and exact/pixel/near copies


def true_pairs(bench: Benchmark) -> dict[str, set[frozenset[str]]]:
    """transform -> the (original, copy) pairs it made."""
    by_transform: dict[str, set[frozenset[str]]] = {t.name: set() for t in ALL_TRANSFORMS}
    for group in bench.groups:
        original = group[0]
        for name in group[1:]:
            by_transform[bench.files[name][1]].add(frozenset((original, name)))
    return by_transform


def score(bench: Benchmark, found: Iterable[frozenset[str]]) -> Score:
    """Score the pairs a method reported (unordered pairs of file names)."""
    found = {pair for pair in found if len(pair) == 2}
    wanted = true_pairs(bench)
    group_of = {name: group for name, (group, _) in bench.files.items()}
    false = {p for p in found if len({group_of[n] for n in p}) == 2}
    recall, precision = {}, {}
    for name, pairs in wanted.items():
        hits = len(pairs & found)
        recall[name] = hits / len(pairs) if pairs else 1.0
        touching = sum(1 for p in false if any(bench.files[n][1] == name for n in p))
        precision[name] = hits / (hits + touching) if hits + touching else 1.0
    near_names = [t.name for t in ALL_TRANSFORMS if t.kind == NEAR]
    near_wanted = set().union(*(wanted[n] for n in near_names))
    near_hits = len(near_wanted & found)
    near_files = {n for n in bench.files if bench.kind(n) in ("original", NEAR, EXACT, PIXEL)}
    near_false = sum(1 for p in false if p <= near_files)
    near_recall = near_hits / len(near_wanted) if near_wanted else 1.0
    near_precision = near_hits / (near_hits + near_false) if near_hits + near_false else 1.0
    f1 = (
        2 * near_recall * near_precision / (near_recall + near_precision)
        if near_recall + near_precision
        else 0.0
    )
    return Score(
        recall, precision, len(false), f1, near_recall, near_precision, len(found), near_false
    )


def pairs_within(names: list[str], hashes: np.ndarray, radius: int) -> set[frozenset[str]]:
    """Every pair of files whose 64-bit hashes are within `radius` (brute force)."""
    distances = hamming_matrix(hashes)
    rows, cols = np.nonzero(np.triu(distances <= radius, 1))
    return {frozenset((names[i], names[j])) for i, j in zip(rows, cols, strict=True)}


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances of a uint64 vector."""
    values = np.asarray(hashes, dtype=np.uint64)
    return np.bitwise_count(values[:, None] ^ values[None, :]).astype(np.int16)
