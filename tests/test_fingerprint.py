"""dupwatch.index.fingerprint on real image files: hashes, formats, EXIF, every error."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import warnings
import zlib
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dupwatch.index.errors import (
    DecompressionBomb,
    EmptyFile,
    FingerprintError,
    MissingFile,
    NotAnImage,
    TooLarge,
    TruncatedImage,
    UnreadableFile,
)
from dupwatch.index.fingerprint import (
    HASH_INPUT_SIZE,
    HASH_PARAMS,
    IMAGE_SUFFIXES,
    Fingerprint,
    fingerprint,
    is_image_name,
    phash_bits,
    same_pixels,
    transforms,
)

from support import SKIMAGE_DATA

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def plain_phash(path: Path | bytes) -> int:
    """What a user of imagehash would get: phash of the full decode, no EXIF handling."""
    with Image.open(path) as img:
        return int(str(imagehash.phash(img)), 16)


def seeded_picture(seed: int = 2024, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic picture: a colour gradient, random boxes and a little noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
        pixels[y0 : y0 + rng.integers(10, 80), x0 : x0 + rng.integers(10, 80)] = rng.integers(
            0, 256, 3
        )
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# --- the hash itself ------------------------------------------------------------------------


def test_phash_bits_are_imagehash_bits_on_the_same_32x32_input(photo) -> None:
    rng = np.random.default_rng(7)
    inputs = [Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)) for _ in range(40)]
    inputs += [photo.image(name, size=(32, 32)).convert("L") for name in PHOTOS]
    inputs += [Image.new("L", (32, 32), 128), Image.linear_gradient("L").resize((32, 32))]
    for small in inputs:
        assert small.size == (HASH_INPUT_SIZE, HASH_INPUT_SIZE)
        assert phash_bits(small) == int(str(imagehash.phash(small)), 16)


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "coffee.png", "camera.png"])
def test_png_photo_hashes_exactly_like_plain_imagehash(name: str) -> None:
    path = SKIMAGE_DATA / name
    assert fingerprint(path).bits == plain_phash(path)


def test_drafted_jpeg_stays_within_two_bits_of_plain_imagehash(photo) -> None:
    differences = []
    for name in PHOTOS:
        upright = photo.image(name)
        for scale in (1, 2, 4):  # x2 and x4 are big enough for the JPEG decoder to scale down
            size = (upright.width * scale, upright.height * scale)
            path = photo(name, fmt="JPEG", size=size)
            differences.append(distance(fingerprint(path).bits, plain_phash(path)))
    assert np.mean(differences) <= 1.0, differences
    assert max(differences) <= 2, differences


def test_golden_hashes(photo) -> None:
    """Pinned values: an upgrade of Pillow, libjpeg, scipy or imagehash that moves bits fails."""
    picture = seeded_picture()
    png = photo.save(picture, "seeded.png")
    jpeg = photo.save(picture.resize((1280, 960), Image.Resampling.BICUBIC), "big.jpg", quality=90)
    rotated = photo.save(picture, "rotated.jpg", quality=90, exif_orientation=6)
    noise = np.random.default_rng(99).integers(0, 256, (240, 320), dtype=np.uint8)
    hashes = {
        "noise.png": fingerprint(photo.save(Image.fromarray(noise), "noise.png")).bits,
        "seeded.png": fingerprint(png).bits,
        "big.jpg": fingerprint(jpeg).bits,
        "rotated.jpg": fingerprint(rotated).bits,
        "chelsea.png": fingerprint(SKIMAGE_DATA / "chelsea.png").bits,
        "retina.jpg": fingerprint(SKIMAGE_DATA / "retina.jpg").bits,
    }
    assert {name: f"{bits:016x}" for name, bits in hashes.items()} == GOLDEN
    assert hashes["seeded.png"] == plain_phash(png)


GOLDEN = {
    "noise.png": "b5e2939304acabf2",
    "seeded.png": "8a46b938c7873e5a",
    "big.jpg": "8a46b938c7873e5a",
    "rotated.jpg": "8a46b938c7873e5a",
    "chelsea.png": "b15fe6465121175e",
    "retina.jpg": "c0cd1f977ac02d0f",  # version 2: a thin, centred black surround is trimmed
}


def test_hash_params_name_the_version_with_border_trimming_and_the_centre() -> None:
    assert HASH_PARAMS["version"] == 4  # issue 11: transparency composited, detail kept
    assert HASH_PARAMS["trim"] == "uniform borders, screenshot frames"
    assert HASH_PARAMS["confirm"] == "centre 80% region"


# --- uniform borders, orientations, crop regions -------------------------------------------


def framed(img: Image.Image, size: tuple[int, int], colour: str) -> Image.Image:
    canvas = Image.new("RGB", size, colour)
    canvas.paste(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 2))
    return canvas


@pytest.mark.parametrize(
    ("name", "frame", "colour", "fmt"),
    [
        ("chelsea.png", (533, 300), "black", "JPEG"),  # letterbox to 16:9
        ("coffee.png", (600, 600), "white", "PNG"),  # padded to a square
        ("rocket.jpg", (700, 700), "gray", "JPEG"),
        ("astronaut.png", (760, 560), "black", "WEBP"),  # bars on all four sides
    ],
)
def test_letterboxed_and_padded_copies_hash_like_the_picture(photo, name, frame, colour, fmt):
    picture = photo.image(name)
    plain = fingerprint(photo.save(picture, f"plain.{fmt.lower()}", fmt=fmt)).bits
    boxed = photo.save(framed(picture, frame, colour), f"boxed.{fmt.lower()}", fmt=fmt)
    assert distance(fingerprint(boxed).bits, plain) <= 3
    assert distance(plain_phash(boxed), plain) > 10  # what imagehash alone makes of it


def test_a_dark_background_is_not_a_border(photo) -> None:
    """Black that is part of the picture (a mostly dark photo) is left alone."""
    stars = np.asarray(photo.image("hubble_deep_field.jpg").convert("L"))[:300, :300]
    path = photo.save(Image.fromarray(stars), "stars.png")
    assert fingerprint(path).bits == plain_phash(path)


@pytest.mark.parametrize(
    ("method", "name"),
    [
        (Image.Transpose.ROTATE_90, "rot90"),
        (Image.Transpose.ROTATE_180, "rot180"),
        (Image.Transpose.ROTATE_270, "rot270"),
        (Image.Transpose.FLIP_LEFT_RIGHT, "flip_lr"),
        (Image.Transpose.FLIP_TOP_BOTTOM, "flip_tb"),
        (Image.Transpose.TRANSPOSE, "transpose"),
        (Image.Transpose.TRANSVERSE, "transverse"),
    ],
)
def test_orientation_hashes_undo_a_turned_copy(photo, method, name) -> None:
    picture = photo.image("motorcycle_left.png")
    upright = fingerprint(photo.save(picture, "upright.png"))
    turned = fingerprint(photo.save(picture.transpose(method), "turned.png"))
    assert len(turned.orientations) == 8
    assert turned.orientations[0] == turned.bits
    assert distance(turned.oriented(name), upright.bits) <= 2
    assert distance(turned.bits, upright.bits) > 16


def test_crop_hashes_describe_sub_regions(photo) -> None:
    picture = photo.image("coffee.png")
    whole = fingerprint(photo.save(picture, "whole.png"))
    assert len(whole.crops) == len(transforms.CROP_REGIONS)
    middle = transforms.CROP_REGIONS.index((0.1, 0.1, 0.8, 0.8))
    box = (60, 40, 540, 360)  # the middle 80% of 600x400
    cropped = fingerprint(photo.save(picture.crop(box), "cropped.png"))
    assert distance(whole.crops[middle], cropped.bits) <= 4
    assert distance(whole.bits, cropped.bits) > 10


def test_fingerprint_fields(photo) -> None:
    path = photo("chelsea.png", fmt="JPEG")
    fp = fingerprint(path)
    data = path.read_bytes()
    assert fp.digest == hashlib.blake2b(data, digest_size=16).digest()
    assert (fp.width, fp.height, fp.format, fp.size) == (451, 300, "JPEG", len(data))
    assert 0 <= fp.bits < 1 << 64
    assert pickle.loads(pickle.dumps(fp)) == fp  # crosses process boundaries
    with pytest.raises(AttributeError):
        fp.bits = 0  # type: ignore[misc]


def test_identical_bytes_give_identical_fingerprints(photo) -> None:
    path = photo("coffee.png", fmt="PNG")
    copy = shutil.copy(path, path.with_name("copy.png"))
    assert fingerprint(copy) == fingerprint(path)


def test_unrelated_photos_are_far_apart() -> None:
    bits = [fingerprint(SKIMAGE_DATA / name).bits for name in PHOTOS]
    distances = [distance(a, b) for i, a in enumerate(bits) for b in bits[i + 1 :]]
    assert min(distances) > 16, distances


# --- EXIF orientation ---------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_rotated_jpeg_hashes_like_the_upright_one(photo, orientation: int) -> None:
    size = (1200, 800)  # wide, and large enough to be drafted
    upright = fingerprint(photo("motorcycle_left.png", fmt="JPEG", size=size))
    stored = photo("motorcycle_left.png", fmt="JPEG", size=size, exif_orientation=orientation)
    with Image.open(stored) as raw:
        assert raw.size == (size if orientation < 5 else size[::-1])  # really stored turned
    rotated = fingerprint(stored)
    assert distance(rotated.bits, upright.bits) <= 2
    assert (rotated.width, rotated.height) == size


def test_exif_rotated_png_hashes_exactly_like_the_upright_one(photo) -> None:
    upright = photo("astronaut.png", fmt="PNG")
    stored = photo("astronaut.png", fmt="PNG", exif_orientation=8)
    assert fingerprint(stored).bits == fingerprint(upright).bits
    assert same_pixels(stored, upright)


def test_corrupt_exif_does_not_lose_the_photo(photo) -> None:
    img = photo.image("chelsea.png")
    path = photo.save(img, "bad_exif.jpg", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data"
        assert fingerprint(path).bits == fingerprint(photo.save(img, "plain.jpg")).bits


# --- formats and modes --------------------------------------------------------------------

FORMATS = [
    ("JPEG", "JPEG", {}),
    ("progressive.jpg", "JPEG", {"progressive": True}),
    ("PNG", "PNG", {}),
    ("WEBP", "WEBP", {"quality": 90}),
    ("lossless.webp", "WEBP", {"lossless": True}),
    ("BMP", "BMP", {}),
    ("TIFF", "TIFF", {"compression": "tiff_lzw"}),
    ("AVIF", "AVIF", {"quality": 90}),
]


@pytest.mark.parametrize(("label", "fmt", "options"), FORMATS)
def test_each_format_reads_and_hashes_near_the_picture(photo, label, fmt, options) -> None:
    if fmt not in Image.registered_extensions().values():
        pytest.skip(f"this Pillow cannot write {fmt}")
    reference = fingerprint(photo("coffee.png", fmt="PNG")).bits
    fp = fingerprint(photo("coffee.png", fmt=fmt, **options))
    assert fp.format == fmt
    assert (fp.width, fp.height) == (600, 400)
    assert distance(fp.bits, reference) <= 4


@pytest.mark.parametrize("mode", ["P", "RGBA", "L", "LA", "1", "CMYK"])
def test_pixel_modes(photo, mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = photo("astronaut.png", fmt=fmt, mode=mode)
    with Image.open(path) as img:
        assert img.mode == mode
    reference = fingerprint(photo("astronaut.png", fmt="PNG")).bits
    limit = 16 if mode == "1" else 4  # a bilevel image keeps only the outline of the picture
    assert distance(fingerprint(path).bits, reference) <= limit


def test_gif_hashes_its_first_frame(photo) -> None:
    first, second = photo.image("chelsea.png"), photo.image("coffee.png", size=(451, 300))
    path = photo.save(first, "anim.gif", save_all=True, append_images=[second], duration=100)
    fp = fingerprint(path)
    assert fp.format == "GIF"
    assert distance(fp.bits, fingerprint(photo.save(first, "first.png")).bits) <= 4
    assert distance(fp.bits, fingerprint(photo.save(second, "second.png")).bits) > 16


def test_sixteen_bit_png_hashes_like_its_eight_bit_version(photo) -> None:
    gray8 = np.asarray(photo.image("camera.png").convert("L"))
    path16 = photo.save(Image.fromarray(gray8.astype(np.uint16) * 257), "deep.png")
    with Image.open(path16) as img:
        assert img.mode.startswith("I;16")
    fp16, fp8 = fingerprint(path16), fingerprint(photo.save(Image.fromarray(gray8), "flat.png"))
    assert fp16.bits == fp8.bits
    assert plain_phash(path16) != fp8.bits  # imagehash's convert('L') clips 16-bit to white


def test_sixteen_bit_tiff(photo) -> None:
    gray8 = np.asarray(photo.image("rocket.jpg").convert("L"))
    path = photo.save(Image.fromarray(gray8.astype(np.uint16) * 257), "deep.tif")
    assert fingerprint(path).bits == fingerprint(photo.save(Image.fromarray(gray8), "f.png")).bits


def test_avif_with_an_exif_orientation_hashes_like_the_upright_picture(photo) -> None:
    if "AVIF" not in Image.registered_extensions().values():
        pytest.skip("this Pillow cannot write AVIF")
    upright = fingerprint(photo("motorcycle_left.png", fmt="PNG"))
    stored = photo("motorcycle_left.png", fmt="AVIF", filename="m.avif", exif_orientation=6)
    turned = fingerprint(stored)
    assert distance(turned.bits, upright.bits) <= 2
    assert (turned.width, turned.height) == (upright.width, upright.height)


def test_heif_when_pillow_heif_is_installed(photo) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    assert pillow_heif is not None
    path = photo("chelsea.png", fmt="HEIF", filename="cat.heic")
    reference = fingerprint(photo("chelsea.png", fmt="PNG")).bits
    assert distance(fingerprint(path).bits, reference) <= 4


# --- errors: each names the file and says why -------------------------------------------------


def raises(kind: type[FingerprintError], path, words: str) -> FingerprintError:
    with pytest.raises(kind) as caught:
        fingerprint(path)
    error = caught.value
    assert error.path == os.fsdecode(path)
    assert os.fsdecode(path) in str(error)
    assert words in error.reason
    return error


def test_missing_file(tmp_path: Path) -> None:
    raises(MissingFile, tmp_path / "gone.jpg", "no such file")
    raises(MissingFile, tmp_path / "not_a_folder.jpg" / "x.jpg", "no such file")


def test_file_deleted_after_listing(photo) -> None:
    path = photo("chelsea.png")
    listed = list(path.parent.iterdir())
    path.unlink()
    raises(MissingFile, listed[0], "no such file")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    raises(UnreadableFile, tmp_path / "folder.jpg", "not a regular file (a directory)")


def test_character_device() -> None:
    raises(UnreadableFile, "/dev/null", "a character device")


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.append(_error_of(fifo)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the reader so the test run can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("fingerprint blocked on a FIFO")
    assert isinstance(outcome[0], UnreadableFile)
    assert "a FIFO" in outcome[0].reason


def _error_of(path: Path) -> BaseException:
    try:
        fingerprint(path)
    except BaseException as error:  # handed to the test thread, which checks its type
        return error
    return AssertionError("no error")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1)")
def test_permission_denied(photo) -> None:
    # Root reads anything, so run as root without the two capabilities that bypass file modes
    # (--reuid=nobody cannot run this interpreter: it lives under /root, mode 0700).
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        locked = shutil.copy(photo("chelsea.png"), folder / "locked.jpg")
        os.chmod(locked, 0)
        script = textwrap.dedent(f"""
            from dupwatch.index.errors import UnreadableFile
            from dupwatch.index.fingerprint import fingerprint
            try:
                fingerprint({str(locked)!r})
            except UnreadableFile as error:
                print(error)
        """)
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
        result = subprocess.run(
            [*command, sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert result.stdout.strip() == f"{locked}: permission denied", result.stderr
    finally:
        shutil.rmtree(folder)


def test_zero_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    raises(EmptyFile, empty, "zero bytes")


def test_text_named_jpg(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("shopping list: eggs, milk\n" * 20)
    raises(NotAnImage, text, "not an image (unrecognised format)")


@pytest.mark.parametrize("fmt", ["EPS", "XBM", "MSP"])
def test_formats_outside_the_list_are_not_read(photo, fmt: str) -> None:
    picture = photo.image("chelsea.png").convert("1" if fmt in ("XBM", "MSP") else "L")
    named_like_a_jpeg = photo.save(picture, f"chelsea-{fmt}.jpg", fmt=fmt)
    raises(NotAnImage, named_like_a_jpeg, "not an image")  # EPS: ghostscript never runs


def test_tga_is_read_only_under_a_tga_name(photo) -> None:
    tga = photo.save(photo.image("chelsea.png"), "chelsea.tga")
    assert isinstance(fingerprint(tga), Fingerprint)
    renamed = tga.with_suffix(".jpg")  # TGA has no signature: bytes under another name
    tga.rename(renamed)
    raises(NotAnImage, renamed, "not an image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.002, 0.05, 0.3, 0.7, 0.99])
def test_truncated(photo, fmt: str, keep: float) -> None:
    whole = photo("astronaut.png", fmt=fmt).read_bytes()
    cut = photo.folder / f"cut.{fmt.lower()}"
    cut.write_bytes(whole[: max(2, int(len(whole) * keep))])
    raises(TruncatedImage, cut, "truncated or corrupt image data")


def test_corrupt_bytes_only_ever_raise_fingerprint_errors(photo) -> None:
    rng = np.random.default_rng(11)
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        whole = bytearray(photo("chelsea.png", fmt=fmt).read_bytes())
        for trial in range(15):
            damaged = bytearray(whole)
            for spot in rng.integers(0, len(damaged), 1 + trial):
                damaged[spot] = int(rng.integers(0, 256))
            damaged = damaged[: int(rng.integers(len(damaged) // 2, len(damaged) + 1))]
            path = photo.folder / f"damaged.{fmt.lower()}"
            path.write_bytes(damaged)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about skipped TIFF tags
                try:
                    fp = fingerprint(path)
                except FingerprintError as error:
                    assert error.path == str(path)
                else:  # a decoder may paint over damage; the result is still a fingerprint
                    assert fp.size == path.stat().st_size


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (greyscale) and has one empty data chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_decompression_bomb_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    raises(DecompressionBomb, bomb, "decompression bomb")


def test_bomb_over_the_default_limit_is_an_error_not_a_warning(tmp_path: Path) -> None:
    bomb = tmp_path / "big.png"
    bomb.write_bytes(png_header(10_000, 10_000))  # Pillow only warns between 89M and 179M
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error = raises(DecompressionBomb, bomb, "decompression bomb")
    assert "10000x10000 = 100,000,000 pixels" in error.reason


def test_max_pixels_is_per_call(photo) -> None:
    path = photo("chelsea.png", fmt="PNG")
    limit_before, filters_before = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    with pytest.raises(DecompressionBomb, match="451x300 = 135,300 pixels"):
        fingerprint(path, max_pixels=100_000)
    with pytest.raises(DecompressionBomb):
        same_pixels(path, path, max_pixels=100_000)
    assert fingerprint(path).width == 451  # no global limit was left behind
    assert (Image.MAX_IMAGE_PIXELS, warnings.filters) == (limit_before, filters_before)


def test_max_bytes(photo) -> None:
    path = photo("chelsea.png", fmt="PNG")
    with pytest.raises(TooLarge, match="over the limit of 1,000"):
        fingerprint(path, max_bytes=1000)


def test_non_utf8_file_name(photo) -> None:
    name = b"caf\xe9 \xff.jpg"
    path = photo.save(photo.image("chelsea.png"), name, quality=90)
    assert isinstance(path, bytes) and os.path.exists(path)
    assert fingerprint(path).bits == fingerprint(photo("chelsea.png")).bits
    os.truncate(path, 500)
    error = raises(TruncatedImage, path, "truncated")
    assert error.path.encode("utf-8", "surrogateescape").endswith(name)


# --- same_pixels --------------------------------------------------------------------------


def test_same_pixels_across_png_savings(photo) -> None:
    img = photo.image("coffee.png")
    fast = photo.save(img, "fast.png", compress_level=1)
    info = PngInfo()
    info.add_text("Comment", "saved again with metadata")
    slow = photo.save(img, "slow.png", compress_level=9, pnginfo=info)
    assert fast.read_bytes() != slow.read_bytes()
    assert same_pixels(fast, slow)
    assert same_pixels(fast, photo.save(img, "lossless.webp", lossless=True))


def test_same_pixels_palette_against_rgb(photo) -> None:
    palette = photo.image("chelsea.png").convert("P")
    assert same_pixels(photo.save(palette, "p.png"), photo.save(palette.convert("RGB"), "rgb.png"))


def test_same_pixels_false_for_reencoded_jpeg_and_other_sizes(photo) -> None:
    first = photo("chelsea.png", fmt="JPEG", quality=90)
    with Image.open(first) as img:
        again = photo.save(img, "again.jpg", quality=90)
    assert first.read_bytes() != again.read_bytes()
    assert not same_pixels(first, again)
    assert not same_pixels(
        photo("chelsea.png", fmt="PNG"), photo("chelsea.png", fmt="PNG", size=(450, 300))
    )


def test_same_pixels_names_the_bad_file(photo, tmp_path: Path) -> None:
    with pytest.raises(MissingFile, match="gone.png"):
        same_pixels(photo("chelsea.png", fmt="PNG"), tmp_path / "gone.png")


# --- names and parameters -----------------------------------------------------------------


def test_is_image_name() -> None:
    for name in ["a.jpg", "B.JPEG", "c.jpe", "d.Png", "e.webp", "f.gif", "g.bmp", "h.tif"]:
        assert is_image_name(name)
    assert is_image_name(b"caf\xe9.HEIC") and is_image_name("x.tiff") and is_image_name("y.avif")
    assert is_image_name("a.psd") and is_image_name("b.PGM") and is_image_name("c.jp2")
    for name in ["a.txt", "jpg", "a.jpg.part", "a.eps", b"\xff.raw", "noext"]:
        assert not is_image_name(name)
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in IMAGE_SUFFIXES)


def test_hash_params_round_trip_through_json() -> None:
    assert json.loads(json.dumps(HASH_PARAMS)) == HASH_PARAMS
    assert isinstance(HASH_PARAMS["version"], int)
    assert (HASH_PARAMS["algo"], HASH_PARAMS["hash_size"]) == ("phash", 8)


def test_fingerprint_is_a_frozen_slotted_dataclass() -> None:
    fp = Fingerprint(bits=1, digest=bytes(16), width=2, height=3, format="PNG", size=4)
    assert not hasattr(fp, "__dict__")
    assert fp == Fingerprint(1, bytes(16), 2, 3, "PNG", 4)
