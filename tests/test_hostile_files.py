"""Hostile files: every one ends in a named FingerprintError or a valid fingerprint, in bounded
time and memory, never a crash or a hang.

Fuzzed and truncated JPEG/PNG/WebP/GIF/TIFF/BMP bytes (hypothesis), absurd header sizes,
decompression bombs, zip polyglots, FIFOs, devices, sockets, symlink loops and links out of
the watched folder, unreadable, vanishing and growing files; then the per-file time limit and
memory cap of the hashing processes (dupwatch.index.hashing), in `dupwatch scan`'s pool, in the
service's writer, and in the real service.

DUPWATCH_FUZZ_EXAMPLES raises the number of fuzz examples for a longer local run.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import cache, partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dupwatch.daemon.service.watcher import Change, ChangeKind
from dupwatch.daemon.service.worker import init_worker
from dupwatch.daemon.service.writer import Writer
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import Index
from dupwatch.index.errors import (
    DecompressionBomb,
    FingerprintError,
    MissingFile,
    NotAnImage,
    UnreadableFile,
)
from dupwatch.index.fingerprint import DEFAULT_MAX_PIXELS, Fingerprint, fingerprint
from dupwatch.index.hashing.limits import OutOfMemory, TimedOut, bounded
from dupwatch.index.hashing.local import hash_all, map_bounded
from dupwatch.index.hashing.tasks import hash_file

from support import DUPWATCH, SKIMAGE_DATA, descendants, wait_for

TIME_BOUND_S = 10.0  # per file, generous for a loaded 2-core machine; most take milliseconds
MEMORY_HEADROOM = 1 << 30  # the fuzzing process may grow by this much, no more
FUZZ_EXAMPLES = int(os.environ.get("DUPWATCH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,  # the same examples on every run: CI is stable
    database=None,
    deadline=None,  # the time bound is TIME_BOUND_S, enforced by bounded()
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# name -> (format, save options): small seeds, so a mutation lands in headers as often as not.
SEEDS = {
    "jpeg": ("JPEG", {"quality": 90}),
    "jpeg_progressive": ("JPEG", {"quality": 90, "progressive": True}),
    "png": ("PNG", {}),
    "png_interlaced": ("PNG", {"interlace": 1}),
    "png_palette": ("PNG", {"mode": "P"}),
    "webp": ("WEBP", {"quality": 80}),
    "webp_lossless": ("WEBP", {"lossless": True}),
    "gif": ("GIF", {}),
    "tiff": ("TIFF", {}),
    "tiff_lzw": ("TIFF", {"compression": "tiff_lzw"}),
    "tiff_deflate": ("TIFF", {"compression": "tiff_adobe_deflate"}),
    "bmp": ("BMP", {}),
}


@cache
def seed(name: str, size: tuple[int, int] = (16, 12)) -> bytes:
    """A real photograph (chelsea) shrunk to `size`, encoded as SEEDS[name], no metadata."""
    fmt, options = SEEDS[name]
    options = dict(options)
    photo = Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB").resize(size)
    img = Image.frombytes("RGB", photo.size, photo.tobytes())  # no ICC profile
    if "mode" in options:
        img = img.convert(options.pop("mode"))
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


@contextmanager
def capped_memory(headroom: int = MEMORY_HEADROOM) -> Iterator[None]:
    """Cap this process's address space at its current size plus `headroom`: a file that
    makes the decoder ask for more gets a MemoryError instead of the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def outcome(path: Path | str | bytes) -> Fingerprint | FingerprintError:
    """fingerprint(path), checked: a valid Fingerprint, or a named FingerprintError subclass
    naming the file, within TIME_BOUND_S and without running out of memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd TIFF tags and EXIF
            with bounded(path, TIME_BOUND_S):
                result = fingerprint(path)
    except (TimedOut, OutOfMemory) as error:
        pytest.fail(f"{error} ({len(Path(os.fsdecode(path)).read_bytes())} bytes)")
    except FingerprintError as error:
        assert type(error) is not FingerprintError, f"an unnamed error: {error}"
        assert error.path == os.fsdecode(path) and error.reason
        return error
    assert 0 <= result.bits < 1 << 64 and len(result.digest) == 16
    assert result.width > 0 and result.height > 0
    assert result.width * result.height <= DEFAULT_MAX_PIXELS
    assert result.size == os.path.getsize(path)
    return result


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwh"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Fuzzing the bytes


def test_every_seed_is_a_valid_image(folder: Path) -> None:
    for name, (fmt, _options) in SEEDS.items():
        path = folder / f"{name}.img"
        path.write_bytes(seed(name))
        result = outcome(path)
        assert isinstance(result, Fingerprint) and result.format == fmt, name


_BYTE = st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]) | st.integers(0, 255)
_EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 16), _BYTE),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 64)),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 16), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
)


def mutate(data: bytes, edits: list[tuple[str, int, Any]]) -> bytes:
    out = bytearray(data)
    for kind, where, arg in edits:
        at = where % (len(out) + 1)
        if kind == "set" and out:
            out[at % len(out)] = arg
        elif kind == "insert":
            out[at:at] = arg
        elif kind == "delete":
            del out[at : at + arg]
        elif kind == "repeat":
            out[at:at] = out[at : at + arg] * 16  # a chunk repeated: lengths and counts lie
        elif kind == "truncate":
            del out[max(1, at) :]
    return bytes(out)


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), edits=st.lists(_EDIT, min_size=1, max_size=8))
def test_mutated_images(folder: Path, name: str, edits: list[tuple[str, int, Any]]) -> None:
    path = folder / f"mutated.{SEEDS[name][0].lower()}"
    path.write_bytes(mutate(seed(name), edits))
    with capped_memory():
        outcome(path)


@FUZZ
@given(data=st.binary(min_size=1, max_size=512), magic=st.sampled_from(
    [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"II*\0", b"MM\0*", b"BM",
     b"RIFF\0\0\0\0WEBPVP8 ", b"\0\0\0\x18ftypheic", b"P5\n", b"P6 ", b"Pf\n",
     b"\0\0\0\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51", b"qoif", b"8BPS", b"DDS ",
     b"\0\0\1\0", b"\x01\xda", b"\x0a\x05\x01"]))  # fmt: skip
def test_random_bytes_behind_a_signature(folder: Path, data: bytes, magic: bytes) -> None:
    path = folder / "random.jpg"
    path.write_bytes(magic + data)
    with capped_memory():
        outcome(path)


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "gif", "tiff", "bmp"])
def test_truncated_at_every_offset(folder: Path, name: str) -> None:
    whole = seed(name, (8, 6))
    path = folder / f"cut.{name}"
    kinds = set()
    with capped_memory():
        for length in range(1, len(whole)):
            path.write_bytes(whole[:length])
            kinds.add(type(outcome(path)).__name__)
    assert kinds - {"Fingerprint"}, "no truncation was noticed at all"
    assert kinds <= {"Fingerprint", "TruncatedImage", "NotAnImage", "DecompressionBomb"}, kinds


# Headers that lie about the size


def with_size(name: str, width: int, height: int) -> bytes:
    """seed(name) with its header claiming width x height (clipped to what the format holds)."""
    data = bytearray(seed(name))
    if name == "png":
        data[16:24] = struct.pack(">II", width % (1 << 32), height % (1 << 32))
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif name == "jpeg":
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height % (1 << 16), width % (1 << 16))
    elif name == "gif":
        data[6:10] = struct.pack("<HH", width % (1 << 16), height % (1 << 16))
        image = data.index(b"\x2c\x00\x00\x00\x00")
        data[image + 5 : image + 9] = struct.pack("<HH", width % (1 << 16), height % (1 << 16))
    elif name == "bmp":
        data[18:26] = struct.pack("<II", width % (1 << 32), height % (1 << 32))
    elif name == "webp":
        frame = data.index(b"\x9d\x01\x2a") + 3
        data[frame : frame + 4] = struct.pack("<HH", width % (1 << 14), height % (1 << 14))
    elif name == "tiff":
        (ifd,) = struct.unpack_from("<I", data, 4)
        (count,) = struct.unpack_from("<H", data, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            (tag,) = struct.unpack_from("<H", data, entry)
            if tag in (256, 257):  # ImageWidth, ImageLength: as LONGs
                value = (width if tag == 256 else height) % (1 << 32)
                data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, value)
    return bytes(data)


_SIDE = st.sampled_from([0, 1, 2, 255, 65535, 65536, 99_999, 2**31 - 1, 2**31, 2**32 - 1])


@FUZZ
@given(
    name=st.sampled_from(["png", "jpeg", "gif", "bmp", "webp", "tiff"]),
    width=_SIDE | st.integers(0, 2**32 - 1),
    height=_SIDE | st.integers(0, 2**32 - 1),
)
def test_absurd_dimensions_in_headers(folder: Path, name: str, width: int, height: int) -> None:
    path = folder / f"absurd.{name}"
    path.write_bytes(with_size(name, width, height))
    with capped_memory():
        outcome(path)  # a Fingerprint is never bigger than the pixel limit (checked there)


def test_a_declared_giant_is_refused_before_decoding(folder: Path) -> None:
    for name in ("png", "jpeg", "gif", "bmp", "webp", "tiff"):
        path = folder / f"giant.{name}"
        path.write_bytes(with_size(name, 60_000, 16_000))
        started = time.monotonic()
        assert isinstance(outcome(path), DecompressionBomb), name
        assert time.monotonic() - started < TIME_BOUND_S


def test_an_elongated_picture_is_refused_before_it_costs_seconds(folder: Path) -> None:
    """Found by the fuzz: a 716-byte TIFF declaring 1x1280736 took 9 s (the hashes' thumbnail
    keeps the long side), 1x50000000 raised a bare MemoryError, a JPEG of 255x39931 2 s."""
    for name, width, height in (("tiff", 1, 1_280_736), ("tiff", 1, 50_000_000),
                                ("jpeg", 255, 39_931), ("png", 100, 65_000)):  # fmt: skip
        path = folder / f"strip.{name}"
        path.write_bytes(with_size(name, width, height))
        error = outcome(path)
        assert isinstance(error, DecompressionBomb) and "too elongated" in error.reason
    wide_strip = folder / "strip.jpeg"  # a tall strip with a real short side is still read
    wide_strip.write_bytes(with_size("jpeg", 1000, 60_000))
    assert isinstance(outcome(wide_strip), Fingerprint)


# Decompression bombs: small files that decode to huge pictures


def png_of_zeros(width: int, height: int) -> bytes:
    """A real greyscale PNG, all black: a few hundred kB that inflate to width x height."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte 0 and the row
    rows = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def test_png_bomb_over_the_limit_is_refused(folder: Path) -> None:
    bomb = folder / "bomb.png"
    bomb.write_bytes(png_of_zeros(12_000, 12_000))  # 144 megapixels in ~140 kB
    assert bomb.stat().st_size < 1 << 20
    with capped_memory():
        error = outcome(bomb)
    assert isinstance(error, DecompressionBomb) and "12000x12000" in error.reason


def test_png_bomb_under_the_limit_decodes_within_bounds(folder: Path) -> None:
    bomb = folder / "flood.png"
    bomb.write_bytes(png_of_zeros(9_000, 9_000))  # 81 megapixels: allowed, and decoded
    with capped_memory():
        result = outcome(bomb)
    assert isinstance(result, Fingerprint) and (result.width, result.height) == (9_000, 9_000)


def test_other_bombs(folder: Path) -> None:
    big = Image.new("L", (9_500, 9_500))  # 90.25 megapixels: just over the limit
    for fmt, options in (("TIFF", {"compression": "tiff_adobe_deflate"}), ("GIF", {})):
        path = folder / f"bomb.{fmt.lower()}"
        big.save(path, format=fmt, **options)
        with capped_memory():
            assert isinstance(outcome(path), DecompressionBomb), fmt


# Polyglots


def zip_of(members: dict[str, bytes], *, stored: bool = True) -> bytes:
    out = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("name", ["png", "jpeg", "gif", "webp", "bmp"])
def test_an_image_with_a_zip_appended_hashes_as_the_image(folder: Path, name: str) -> None:
    plain, polyglot = folder / f"plain.{name}", folder / f"polyglot.{name}"
    plain.write_bytes(seed(name))
    polyglot.write_bytes(seed(name) + zip_of({"payload.txt": b"hello" * 100, "x.png": seed("png")}))
    a, b = outcome(plain), outcome(polyglot)
    assert isinstance(a, Fingerprint) and isinstance(b, Fingerprint)
    assert a.bits == b.bits and a.digest != b.digest  # the same picture, other bytes


def test_zips_and_other_wrappers_named_like_images(folder: Path) -> None:
    cases = {
        "stored.png": zip_of({"inner.png": seed("png")}),
        "deflated.jpg": zip_of({"inner.jpg": seed("jpeg")}, stored=False),
        "pdf.png": b"%PDF-1.4\n" + seed("png"),
        "html.gif": b"<html><!--" + seed("gif") + b"--></html>",
        "jar.jpg": zip_of({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n"}),
    }
    for name, data in cases.items():
        path = folder / name
        path.write_bytes(data)
        assert isinstance(outcome(path), NotAnImage), name


# Files that are not files


def run_bounded(function: Callable[[], Any], timeout_s: float = TIME_BOUND_S) -> Any:
    """function() in a thread: a call that blocks (a FIFO opened for reading) fails the test
    instead of hanging it."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(function()), daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert result, f"{function} did not return within {timeout_s} s"
    return result[0]


def special_files(folder: Path) -> dict[str, str]:
    """Special files with image names -> the reason fingerprint() must give."""
    os.mkfifo(folder / "fifo.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.png"))
    server.close()  # the socket file stays
    (folder / "folder.jpg").mkdir()
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("/dev/zero", folder / "zero_link.png")
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    reasons = {
        "fifo.jpg": "a FIFO",
        "socket.png": "a socket",
        "folder.jpg": "a directory",
        "loop_a.jpg": "symbolic links",
        "zero_link.png": "a character device",
        "dangling.png": "no such file",
    }
    if os.getuid() == 0:  # a real character device, like /dev/zero (1, 5), with a photo's name
        os.mknod(folder / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        reasons["device.jpg"] = "a character device"
    return reasons


def test_special_files_are_refused_without_blocking(folder: Path) -> None:
    for name, reason in special_files(folder).items():
        error = run_bounded(partial(outcome, folder / name))
        assert isinstance(error, UnreadableFile | MissingFile), name
        assert reason in error.reason, (name, error.reason)
        # What the scan and the service hash: links are not even followed.
        _path, hashed, _st = run_bounded(partial(hash_file, os.fsencode(folder / name)))
        assert isinstance(hashed, UnreadableFile | MissingFile), name


def test_links_out_of_the_folder_are_not_indexed(folder: Path, photo) -> None:
    outside = photo("coffee.png")
    watched = folder / "watched"
    watched.mkdir()
    shutil.copy(photo("chelsea.png"), watched / "real.jpg")
    os.symlink(outside, watched / "link.jpg")
    os.symlink(outside.parent, watched / "linked_folder")
    os.symlink("loop.jpg", watched / "loop.jpg")
    with Index.open(folder / "index") as index:
        report = index.update([watched], workers=1)
        assert {r.fspath for r in index.files()} == {str(watched / "real.jpg")}
        assert report.failed == [] and index.check() == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1)")
def test_unreadable_file_is_named_and_remembered(folder: Path, photo) -> None:
    locked = shutil.copy(photo("chelsea.png"), folder / "locked.jpg")
    os.chmod(locked, 0)
    script = textwrap.dedent(f"""
        from dupwatch.index.hashing.tasks import hash_file
        path, error, st = hash_file({os.fsencode(locked)!r})
        print(type(error).__name__, error, st is not None)
    """)
    drop = "-dac_override,-dac_read_search"  # root without the capabilities that skip modes
    command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
    result = subprocess.run(
        [*command, sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == f"UnreadableFile {locked}: permission denied True", (
        result.stderr
    )


# Files that change under the reader


def test_file_deleted_between_the_event_and_the_read(folder: Path, photo) -> None:
    path = shutil.copy(photo("chelsea.png"), folder / "gone.jpg")
    os.remove(path)  # the event said it was there
    _path, error, st = hash_file(os.fsencode(path))
    assert isinstance(error, MissingFile) and st is None
    paths = [os.fsencode(folder / f"vanished{i}.jpg") for i in range(8)]
    outcomes = list(hash_all(paths, workers=2))  # the same through worker processes
    assert {type(o[1]) for o in outcomes} == {MissingFile} and len(outcomes) == 8


def test_file_that_keeps_growing(folder: Path) -> None:
    path = folder / "growing.png"
    path.write_bytes(seed("png"))
    stop = threading.Event()

    def grow() -> None:
        with open(path, "ab") as out:
            while not stop.is_set() and out.tell() < 64 << 20:
                out.write(os.urandom(1 << 16))
                out.flush()

    grower = threading.Thread(target=grow, daemon=True)
    grower.start()
    try:
        seen = set()
        for _ in range(20):
            try:
                with bounded(path, TIME_BOUND_S):
                    result: Any = fingerprint(path, max_bytes=8 << 20)
            except (TimedOut, OutOfMemory) as error:
                pytest.fail(str(error))
            except FingerprintError as error:
                result = error
            seen.add(type(result).__name__)
    finally:
        stop.set()
        grower.join()
    # The PNG ends before the appended noise (a fingerprint of the picture), until the file
    # passes max_bytes (TooLarge, named).
    assert seen <= {"Fingerprint", "TooLarge", "TruncatedImage"}, seen


# Time and memory limits of the hashing processes


def heavy_png(path: Path) -> Path:
    """A legitimate 16-bit 6000x6000 PNG: 0.3 MB on disk, 0.6-2 s and ~0.9 GB to fingerprint."""
    Image.linear_gradient("L").resize((6000, 6000)).convert("I").convert("I;16").save(
        path, compress_level=1
    )
    return path


def heavier_png(path: Path) -> Path:
    """A legitimate 16-bit 9000x9000 PNG: 0.7 MB on disk, 1.4-4 s and ~1.6 GB to fingerprint
    (past a limit of 1 s: 1.4 s warm on a quiet machine with Pillow 13, 2.3 s with 11)."""
    Image.linear_gradient("L").resize((9000, 9000)).convert("I").convert("I;16").save(
        path, compress_level=1
    )
    return path


def small_pngs(folder: Path, count: int) -> list[bytes]:
    paths = []
    for i in range(count):
        path = folder / f"small{i}.png"
        Image.open(SKIMAGE_DATA / "camera.png").resize((40 + i, 30)).save(path)
        paths.append(os.fsencode(path))
    return paths


def test_time_limit_in_process(folder: Path) -> None:
    heavy = os.fsencode(heavy_png(folder / "heavy.png"))
    started = time.monotonic()
    _path, error, st = hash_file(heavy, timeout_s=0.3)
    assert isinstance(error, TimedOut) and "timed out" in error.reason and st is not None
    assert time.monotonic() - started < TIME_BOUND_S
    assert isinstance(hash_file(os.fsencode(small_pngs(folder, 1)[0]))[1], Fingerprint)


def test_scan_pool_times_out_a_slow_file_and_hashes_the_rest(folder: Path) -> None:
    heavy = os.fsencode(heavy_png(folder / "heavy.png"))
    small = small_pngs(folder, 8)
    outcomes = {p: o for p, o, _st in hash_all([heavy, *small], workers=2, timeout_s=0.3)}
    assert isinstance(outcomes.pop(heavy), TimedOut)
    assert all(isinstance(o, Fingerprint) for o in outcomes.values()) and len(outcomes) == 8


def test_scan_pool_kills_a_worker_that_ignores_the_time_limit(folder: Path) -> None:
    """A decoder stuck inside one C call never takes the signal: here the task has no soft
    limit at all, so only the hard deadline (kill, report, replace) can end it."""
    heavy = os.fsencode(heavy_png(folder / "heavy.png"))
    small = small_pngs(folder, 8)
    no_soft_limit = partial(hash_file, timeout_s=None)
    started = time.monotonic()
    results = map_bounded(no_soft_limit, [heavy, *small], workers=2, timeout_s=0.2, grace_s=0.2)
    outcomes = {p: o for p, o, _st in results}
    assert isinstance(outcomes.pop(heavy), TimedOut)
    assert all(isinstance(o, Fingerprint) for o in outcomes.values()) and len(outcomes) == 8
    assert time.monotonic() - started < 30


def test_memory_cap_makes_a_flood_a_named_error(folder: Path) -> None:
    heavy = os.fsencode(heavy_png(folder / "heavy.png"))
    small = small_pngs(folder, 3)
    task = partial(hash_file, timeout_s=30.0)
    results = map_bounded(task, [heavy, *small], workers=1, timeout_s=30, memory_bytes=700 << 20)
    outcomes = {p: o for p, o, _st in results}
    error = outcomes.pop(heavy)
    assert isinstance(error, OutOfMemory) and "more memory" in error.reason
    assert all(isinstance(o, Fingerprint) for o in outcomes.values())  # the process goes on


def test_dupwatch_scan_of_a_hostile_folder(folder: Path) -> None:
    pics = folder / "pics"
    pics.mkdir()
    for i, path in enumerate(small_pngs(pics, 8)):  # enough files for the worker processes
        os.rename(path, pics / f"ok{i}.png")
    special_files(pics)
    (pics / "bomb.png").write_bytes(png_of_zeros(12_000, 12_000))
    (pics / "strip.jpg").write_bytes(with_size("jpeg", 1, 1_280_736))
    (pics / "cut.webp").write_bytes(seed("webp")[:40])
    (pics / "polyglot.png").write_bytes(seed("png") + zip_of({"a.txt": b"a"}))
    result = subprocess.run(
        [DUPWATCH, "scan", "--index", str(folder / "idx"), "--json", str(pics)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CONFIG_HOME": str(folder / "cfg")},
    )
    assert result.returncode in (0, 1), result.stderr
    for name, reason in (("bomb.png", "decompression bomb: 12000x12000"),
                         ("strip.jpg", "decompression bomb: 1x35552 is too elongated"),
                         ("cut.webp", "truncated")):  # fmt: skip
        assert f"dupwatch: {pics / name}: {reason}" in result.stderr, result.stderr
    assert "9 hashed" in result.stderr and "3 unreadable" in result.stderr, result.stderr
    with Index.open(folder / "idx", readonly=True) as index:
        assert len(index) == 9 and index.check() == []  # the 8 PNGs and the polyglot


# The service's writer: the same limits, with a real index and real hashing processes


def hashing_pool() -> ProcessPoolExecutor:
    """The service's pool (Service._new_pool): forkserver, capped, dying with this process."""
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(
        2, mp_context=context, initializer=init_worker, initargs=(os.getpid(), 4 << 30)
    )
    for future in [pool.submit(os.getpid) for _ in range(2)]:
        future.result(60)  # both processes started
    return pool


@contextmanager
def running_writer(
    folder: Path, hash_timeout_s: float, new_pool: Callable[[], Any] = hashing_pool
) -> Iterator[Writer]:
    index = Index.open(folder / "index")
    writer = Writer(
        index,
        new_pool,
        workers=2,
        ignore=(),
        on_duplicate=lambda result: None,
        hash_timeout_s=hash_timeout_s,
    )
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()
        index.close()


def test_writer_waits_for_hashing_processes_that_fail_to_start(folder: Path) -> None:
    """Killed workers whose replacements cannot start at once (the forkserver killed with
    them and not yet gone: starting a process then fails with a plain OSError): the files
    wait, new processes are tried again a moment later, and every file is indexed."""
    pools: list[ProcessPoolExecutor] = []
    refusals = [2]

    def new_pool() -> ProcessPoolExecutor:
        if pools and refusals[0]:
            refusals[0] -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        pools.append(hashing_pool())
        return pools[-1]

    paths = [Path(os.fsdecode(p)) for p in small_pngs(folder, 6)]
    with running_writer(folder, hash_timeout_s=30, new_pool=new_pool) as writer:
        for pid in list(pools[0]._processes):  # the pool's workers
            os.kill(pid, signal.SIGKILL)
        for path in paths:
            writer.submit(Change(ChangeKind.FILE, os.fsencode(path)))
        wait_for(lambda: writer.stats.hashed == 6, what="the six files hashed")
        assert refusals == [0] and len(pools) == 2
        assert writer.stats.failed == 0
        assert sorted(r.fspath for r in writer.index.files()) == sorted(map(str, paths))


def test_writer_skips_a_file_past_the_time_limit(folder: Path) -> None:
    # A limit a small PNG keeps even on a loaded machine, and a file far past it.
    heavy = heavier_png(folder / "heavy.png")
    small = [Path(os.fsdecode(p)) for p in small_pngs(folder, 3)]
    with running_writer(folder, hash_timeout_s=1.0) as writer:
        for path in [heavy, *small]:
            writer.submit(Change(ChangeKind.FILE, os.fsencode(path)))
        wait_for(lambda: writer.stats.hashed == 3 and writer.stats.failed == 1, what="hashes")
        assert "timed out" in writer.stats.last_failures[-1]
        [failure] = writer.index.failures()  # remembered: not read again until it changes
        assert failure.path == os.fsencode(heavy) and "timed out" in failure.reason


def test_writer_kills_a_hashing_process_stuck_past_the_limit(folder: Path) -> None:
    with running_writer(folder, hash_timeout_s=0.5) as writer:
        stuck = list(
            writer.hashers.pool._processes
        )  # the pool's processes, as the service has them
        for pid in stuck:
            os.kill(pid, signal.SIGSTOP)  # hung: they take no signal but SIGKILL
        path = Path(os.fsdecode(small_pngs(folder, 1)[0]))
        writer.submit(Change(ChangeKind.FILE, os.fsencode(path)))
        wait_for(lambda: writer.stats.failed == 1, what="the time limit")
        assert "timed out" in writer.stats.last_failures[-1]
        for pid in stuck:  # killed, not left stopped
            wait_for(lambda pid=pid: _gone(pid), 30, f"process {pid} to end")
        (folder / "later").mkdir()
        later = Path(os.fsdecode(small_pngs(folder / "later", 1)[0]))
        writer.submit(Change(ChangeKind.FILE, os.fsencode(later)))
        wait_for(lambda: writer.stats.hashed == 1, what="the new processes")


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


# The real service


def test_the_service_survives_a_folder_of_hostile_files(folder: Path, photo) -> None:
    root = folder / "w"
    root.mkdir()
    outside = folder / "outside"
    outside.mkdir()
    shutil.copy(photo("rocket.jpg"), outside / "secret.jpg")
    env = {
        **os.environ,
        "DUPWATCH_INDEX": str(folder / "idx"),
        "DUPWATCH_SOCKET": str(folder / "s.sock"),
        "XDG_CONFIG_HOME": str(folder / "cfg"),
    }
    env.pop("NOTIFY_SOCKET", None)
    config = folder / "config.toml"
    config.write_text("workers = 2\nhash_timeout_s = 1\n")
    log = open(folder / "daemon.log", "wb")  # noqa: SIM115 - closed in finally
    daemon = subprocess.Popen(
        [DUPWATCH, "--config", str(config), "daemon", str(root)], env=env, stdout=log, stderr=log
    )

    def status() -> dict[str, Any] | None:
        try:
            with Client(folder / "s.sock", timeout_s=30) as client:
                return client.call("status")
        except (DaemonNotRunning, OSError):
            assert daemon.poll() is None, (folder / "daemon.log").read_text()
            return None

    try:
        wait_for(lambda: (s := status()) and s["state"] == "ready", what="READY")
        # The hashing processes (not the forkserver) run with their address space capped.
        wait_for(
            lambda: any(_address_space_cap(pid) == 4 << 30 for pid in descendants(daemon.pid)),
            what="a capped hashing process",
        )

        for name in special_files(root):  # FIFO, socket, folder, links, device
            assert os.path.lexists(root / name)
        os.symlink(outside / "secret.jpg", root / "link_in_place.jpg")
        os.symlink(outside, root / "linked_folder")
        os.symlink(outside / "secret.jpg", folder / "staged_link.jpg")
        os.rename(folder / "staged_link.jpg", root / "moved_in_link.jpg")  # a move event
        (root / "bomb.png").write_bytes(with_size("png", 60_000, 16_000))
        (root / "cut.jpg").write_bytes(seed("jpeg")[:300])
        (root / "notes.jpg").write_text("not a picture\n")
        (root / "polyglot.gif").write_bytes(seed("gif") + zip_of({"a.txt": b"a"}))
        for i in range(20):  # created and deleted before the service reads them
            (root / f"flash{i}.png").write_bytes(seed("png"))
            os.remove(root / f"flash{i}.png")
        shutil.copy(photo("chelsea.png"), root / "real.jpg")

        def settled() -> dict[str, Any] | None:
            s = status()
            return s if s and (s["files"], s["queue"], s["failed"]) == (2, 0, 3) else None

        assert wait_for(settled, what="the folder to settle")["state"] == "ready"
        with Index.open(folder / "idx", readonly=True) as index:
            assert {r.fspath for r in index.files()} == {
                str(root / "real.jpg"),
                str(root / "polyglot.gif"),
            }
            failed = {os.fsdecode(f.path) for f in index.failures()}
            assert index.check() == []
        assert failed == {str(root / n) for n in ("bomb.png", "cut.jpg", "notes.jpg")}

        # Queries decode in a hashing process too, with its limits: named errors, and the
        # service carries on (a picture that takes 1.4-4 s against the 1 s limit times out;
        # heavy_png's 0.6 s, warm on a quiet machine, did not).
        heavy = heavier_png(outside / "heavy.png")
        with Client(folder / "s.sock", timeout_s=60) as client:
            with pytest.raises(DecompressionBomb, match="bomb.png"):
                client.call("query", path=str(root / "bomb.png"))
            with pytest.raises(FingerprintError, match="heavy.png.*timed out"):
                client.call("query", path=str(heavy))
            matches = client.call("query", path=str(root / "real.jpg"))["matches"]
            assert [m["path"] for m in matches if m.get("self")] == [str(root / "real.jpg")]
        assert status()["state"] == "ready"
        output = (folder / "daemon.log").read_text()
        assert "decompression bomb" in output and str(root / "cut.jpg") in output
        assert "secret" not in output  # nothing behind a link was read
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        log.close()
    assert daemon.returncode == 0


def _address_space_cap(pid: int) -> int | None:
    """The soft RLIMIT_AS of a process, None when unlimited (or the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("Max address space"):
            soft = line.removeprefix("Max address space").split()[0]
            return None if soft == "unlimited" else int(soft)
    return None


def test_a_query_without_the_service_has_the_time_limit(folder: Path) -> None:
    """`dupwatch query` answered from the index itself decodes in its own process, under the
    same time limit as the hashing processes (hash_timeout_s)."""
    pics = folder / "pics"
    pics.mkdir()
    small_pngs(pics, 2)
    heavy = heavier_png(folder / "heavy.png")  # 6000x6000 takes 0.6 s warm: too near 0.5
    config = folder / "config.toml"
    config.write_text("hash_timeout_s = 0.5\n")
    index = folder / "idx"
    common = [DUPWATCH, "--config", str(config), "--index", str(index)]
    scanned = subprocess.run([*common, "scan", str(pics)], capture_output=True, timeout=120)
    assert scanned.returncode in (0, 1), scanned.stderr
    started = time.monotonic()
    asked = subprocess.run(
        [*common, "--socket", str(folder / "none.sock"), "query", str(heavy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.returncode == 2
    assert f"{heavy}: timed out: not fingerprinted within 0.5 s" in asked.stderr
    assert time.monotonic() - started < 10


def test_a_pixel_comparison_decodes_in_a_hashing_process(folder: Path) -> None:
    """Two PNGs with the same pixels and other bytes: telling a `pixel` match needs a full
    decode of both, which the service makes in its hashing processes (with their limits):
    ahead of the write (dupwatch.index.prefetch), so the writer's own fallback, which would
    also ask a hashing process, is not needed."""
    picture = Image.open(SKIMAGE_DATA / "camera.png")
    picture.save(folder / "a.png", compress_level=1)
    picture.save(folder / "b.png", compress_level=9)
    asked: list[bytes] = []
    with running_writer(folder, hash_timeout_s=30) as writer:

        def in_worker(path: bytes) -> bytes:
            asked.append(path)
            return writer.pixel_digest(path)

        writer.index.pixels.decode = in_worker
        alerts: list[Any] = []
        writer.on_duplicate = alerts.append
        writer.submit(Change(ChangeKind.FILE, os.fsencode(folder / "a.png")))
        wait_for(lambda: writer.stats.hashed == 1, what="a.png indexed")
        writer.submit(Change(ChangeKind.FILE, os.fsencode(folder / "b.png")))
        wait_for(lambda: alerts, what="the alert for b.png")
    [result] = alerts
    [match] = result.matches
    assert (Path(match.record.fspath).name, str(match.kind)) == ("a.png", "pixel")
    assert asked == []
