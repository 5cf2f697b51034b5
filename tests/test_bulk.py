"""The bulk paths store exactly what one put() per file stores: put_many's batched search,
put_bulk's array-made pairs, and recompute_pairs' self-join, on synthetic fingerprints with
near hashes, shared hashes, byte copies, pictures without a centre hash, low-information
pictures and thumbnails that agree or not (the second look), and on real photographs with
their turned, mirrored and cropped copies (--transforms)."""

from __future__ import annotations

import itertools
import os
import random
import threading
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupwatch.index import Fingerprint, Index, bulk, pair_table
from dupwatch.index.fingerprint.detail import DETAIL_SIDE, near_allowed
from dupwatch.index.fingerprint.file import fingerprint, match_distance
from dupwatch.index.fingerprint.transforms import CENTRE_REGION, CROP_REGIONS
from dupwatch.index.pair_arrays import Catalog, looks_alike, stack
from dupwatch.index.store.multi_index import Layout
from dupwatch.index.store.pairs import Kind
from dupwatch.index.store.selfjoin import gathered, self_join, self_join_beside


def flip(bits: int, rng: random.Random, count: int) -> int:
    for position in rng.sample(range(64), count):
        bits ^= 1 << position
    return bits


def thumbnail_near(base: bytes, rng: random.Random, noise: int) -> bytes:
    pixels = np.frombuffer(base, dtype=np.uint8).astype(int)
    moved = pixels + np.array([rng.randint(-noise, noise) for _ in range(len(pixels))])
    return np.clip(moved, 0, 255).astype(np.uint8).tobytes()


def fingerprints(seed: int, count: int) -> list[tuple[str, Fingerprint]]:
    """Pictures in families of near copies: some share a hash, some are byte copies, some have
    no centre hash (made by an older dupwatch), some have little in them (low information),
    most have a thumbnail that agrees with their family's, some one that does not, some none
    (and so no turned hashes either: an older record)."""
    rng = random.Random(seed)
    out = []
    families = [(rng.getrandbits(64), rng.randbytes(DETAIL_SIDE**2)) for _ in range(count // 12)]
    for i in range(count):
        family, family_thumbnail = rng.choice(families)
        bits = flip(family, rng, rng.choice([0, 0, 1, 3, 6, 9, 12, 15]))
        centre = flip(bits, rng, rng.randint(0, 10))
        digest = rng.randbytes(16) if rng.random() > 0.1 else family.to_bytes(8, "big") * 2
        crops = [0] * len(CROP_REGIONS)
        crops[CENTRE_REGION] = centre
        side = rng.choice([64, 64, 128])
        look = rng.random()
        if look < 0.6:
            thumbnail = thumbnail_near(family_thumbnail, rng, rng.choice([5, 40, 120]))
        elif look < 0.8:
            thumbnail = rng.randbytes(DETAIL_SIDE**2)  # another picture, by its thumbnail
        else:
            thumbnail = b""
        orientations = (bits, *(rng.getrandbits(64) for _ in range(7))) if thumbnail else ()
        low_std = 1.0 if rng.random() < 0.1 else 50.0
        fp = Fingerprint(bits, digest, side, side, "PNG", side, orientations, tuple(crops),
                         low_std=low_std, thumbnail=thumbnail)  # fmt: skip
        if rng.random() < 0.1:
            fp = Fingerprint(bits, digest, side, side, "PNG", side)  # no centre, no detail
        out.append((f"{i:05d}.png", fp))
    return out


def pairs_of(index: Index) -> list[tuple]:
    names = {r.id: Path(r.fspath).name for r in index.files()}
    with index.store.read() as txn:
        return sorted(
            (names[a], names[p.other], p.distance, str(p.kind), p.transform)
            for a in names
            for p in index.pairs.of(txn, a)
        )


def shown(results: list) -> list[tuple]:
    return [
        (Path(r.record.fspath).name, [(Path(m.record.fspath).name, m.distance, str(m.kind),
                                       m.transform) for m in r.matches])
        for r in results
    ]  # fmt: skip


def records_of(index: Index) -> list[tuple]:
    return sorted((Path(r.fspath).name, r.bits, r.low_information, r.thumbnail, r.orientations,
                   r.pixel_digest) for r in index.files())  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_paths_store_what_one_put_per_file_stores(tmp_path: Path, seed: int) -> None:
    stat = os.stat(tmp_path)
    items = [(tmp_path / name, fp, stat) for name, fp in fingerprints(seed, 400)]
    # A path met again replaces its record (put_bulk hands it to put() in its turn).
    items.insert(250, (items[10][0], items[300][1], stat))
    with Index.open(tmp_path / "one") as one:
        each = [one.put(*item) for item in items]
        expected = pairs_of(one)
        records = records_of(one)
        assert one.check() == []
    with Index.open(tmp_path / "many") as many:
        batched = []
        for start in range(0, len(items), 64):
            batched += many.put_many(items[start : start + 64])
        assert pairs_of(many) == expected
        assert shown(batched) == shown(each)
        assert records_of(many) == records
    with Index.open(tmp_path / "bulk") as bulk:
        assert bulk.put_bulk(items, batch=37) == len(items)
        assert pairs_of(bulk) == expected
        assert records_of(bulk) == records
        assert bulk.check() == []
    assert len(expected) > 200  # the families make pairs of every kind
    assert {kind for _, _, _, kind, _ in expected} == {"exact", "near"}


def test_matches_beyond_the_pair_radius_are_shown_but_not_stored(tmp_path: Path) -> None:
    stat = os.stat(tmp_path)
    items = [(tmp_path / name, fp, stat) for name, fp in fingerprints(5, 200)]
    for name in ("one", "many", "bulk"):
        Index.open(tmp_path / name, radius=8).close()  # pairs kept at 8
    with Index.open(tmp_path / "one", radius=14) as one:
        each = [one.put(*item) for item in items]
        expected = pairs_of(one)
    with Index.open(tmp_path / "many", radius=14) as many:
        batched = many.put_many(items)
        assert shown(batched) == shown(each)
        assert pairs_of(many) == expected
        assert max(m.distance for r in batched for m in r.matches) > 8
        assert max(p[2] for p in pairs_of(many)) <= 8
    with Index.open(tmp_path / "bulk", radius=14) as bulk:
        bulk.put_bulk(items, batch=50)
        assert pairs_of(bulk) == expected


def reference_pairs(index: Index, radius: int) -> list[tuple]:
    """Every pair by brute force: match distance within the radius, exact when the digests
    agree (these fingerprints have no files, so no pixel comparison can succeed), a near
    pair only past the second look."""
    records = list(index.files())
    out = []
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            distance = match_distance((a.bits ^ b.bits).bit_count(), a.centre, b.centre)
            if distance > radius:
                continue
            kind = Kind.EXACT if a.digest == b.digest else Kind.NEAR
            if kind == Kind.NEAR and not near_allowed(
                a.low_information, a.thumbnail, b.low_information, b.thumbnail
            ):
                continue
            for x, y in ((a, b), (b, a)):
                out.append((Path(x.fspath).name, Path(y.fspath).name, distance, str(kind), None))
    return sorted(out)


@pytest.mark.parametrize("beside_from", [pair_table.BESIDE_FROM, 0])
def test_recomputed_pairs_equal_brute_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beside_from: int
) -> None:
    """Also with the self-join in its own thread, as from BESIDE_FROM files on two cores."""
    monkeypatch.setattr(pair_table, "BESIDE_FROM", beside_from)
    stat = os.stat(tmp_path)
    with Index.open(tmp_path / "index") as index:
        index.put_bulk((tmp_path / name, fp, stat) for name, fp in fingerprints(9, 300))
        assert pairs_of(index) == reference_pairs(index, 12)
        for radius in (0, 4, 12, 16, 12):
            index.recompute_pairs(radius)
            assert pairs_of(index) == reference_pairs(index, radius)
        index.repair()
        assert pairs_of(index) == reference_pairs(index, 12) and index.check() == []


def test_a_recompute_the_map_cuts_short_is_judged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the new pairs outgrow the map, the write is tried again once it has grown: the
    pairs judged the first time are stored then, not found and judged again; nothing is
    left in the index folder."""
    stat = os.stat(tmp_path)
    judged = []
    judge_all = pair_table.PairTable._judge_all
    monkeypatch.setattr(
        pair_table.PairTable,
        "_judge_all",
        lambda self, *args: judged.append(args[-1]) or judge_all(self, *args),
    )
    with Index.open(tmp_path / "index") as index:
        index.put_bulk((tmp_path / name, fp, stat) for name, fp in fingerprints(9, 300))
        before = os.listdir(tmp_path / "index")
        index.hashes.release()  # as the Store does before it resizes the map
        index.store.env.set_mapsize(1)  # LMDB keeps the pages in use: the map is full
        small = index.store.env.info()["map_size"]
        with caplog.at_level("INFO"):
            index.recompute_pairs(16)
        assert "map is full" in caplog.text and index.store.env.info()["map_size"] > small
        assert judged == [16]
        assert pairs_of(index) == reference_pairs(index, 16)
        assert os.listdir(tmp_path / "index") == before


def test_bulk_batches_make_room_first_and_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write would fill the map is run again whole once the map has grown (its
    search is most of its time): from the second batch on, room for twice the largest batch
    so far is made first, so each runs once; and what is stored is what put() stores."""
    stat = os.stat(tmp_path)
    items = [(tmp_path / name, fp, stat) for name, fp in fingerprints(4, 600)]
    runs: list[bytes] = []  # the first path of each batch run
    store_new = bulk._store_new
    monkeypatch.setattr(
        bulk, "_store_new", lambda writer, txn, state, batch: runs.append(batch[0][0])
        or store_new(writer, txn, state, batch),
    )  # fmt: skip
    with Index.open(tmp_path / "bulk") as index:
        index.put_bulk(items[:50], batch=50)
        index.hashes.release()  # as the Store does before it resizes the map
        index.store.env.set_mapsize(1)  # LMDB keeps the pages in use: the map is full
        small = index.store.env.info()["map_size"]
        runs.clear()
        index.put_bulk(items[50:], batch=50)
        assert index.store.env.info()["map_size"] > small  # it did grow
        first, *later = [os.fsencode(item[0]) for item in items[50::50]]
        assert runs.count(first) > 1  # the first batch of this call filled it, and learnt
        assert [path for path in runs if path != first] == later  # each of the rest once
        stored = pairs_of(index)
    with Index.open(tmp_path / "one") as one:
        for item in items:
            one.put(*item)
        assert stored == pairs_of(one)


@pytest.mark.parametrize("gather", [0, 97])
@pytest.mark.parametrize("layout", [(16, 16, 16, 16), (21, 21, 22)])
@pytest.mark.parametrize("radius", [0, 3, 8, 12, 16])
def test_self_join_equals_brute_force(radius: int, layout: tuple[int, ...], gather: int) -> None:
    """Also with its batches gathered into larger ones (as recompute_pairs judges them)."""
    rng = np.random.default_rng(radius)
    centres = rng.integers(0, 2**64 - 1, 40, dtype=np.uint64, endpoint=True)
    noise = np.zeros(2000, dtype=np.uint64)
    for _ in range(8):
        noise |= np.uint64(1) << rng.integers(0, 64, 2000).astype(np.uint64)
    bits = np.concatenate([centres[rng.integers(0, 40, 2000)] ^ noise, centres[:30]])
    batches = self_join(bits, radius, chunk=1000, layout=Layout(layout))
    if gather:
        batches = gathered(batches, at_least=gather)
    found = sorted(
        (a, b, d)
        for rows in batches
        for a, b, d in zip(*(column.tolist() for column in rows), strict=True)
    )
    expected = sorted(
        (i, j, (int(bits[i]) ^ int(bits[j])).bit_count())
        for i in range(len(bits))
        for j in np.flatnonzero(np.bitwise_count(bits[i + 1 :] ^ bits[i]) <= radius) + i + 1
    )
    assert found == expected


def test_self_join_beside_gives_the_same_batches_and_stops_when_left() -> None:
    rng = np.random.default_rng(5)
    centres = rng.integers(0, 2**64 - 1, 50, dtype=np.uint64, endpoint=True)
    bits = centres[rng.integers(0, 50, 3000)] ^ (
        np.uint64(1) << rng.integers(0, 64, 3000, dtype=np.uint64)
    )
    expected = [tuple(c.tolist() for c in batch) for batch in gathered(self_join(bits, 6), 500)]
    found = [tuple(c.tolist() for c in batch) for batch in self_join_beside(bits, 6, at_least=500)]
    assert found == expected and len(found) > 3
    threads = threading.active_count()
    batches = self_join_beside(bits, 6, at_least=500)
    next(batches)
    batches.close()  # the caller stops early: the thread ends instead of waiting forever
    assert threading.active_count() == threads
    with pytest.raises(ValueError):  # what goes wrong in the thread is raised to the caller
        list(self_join_beside(np.array(["not", "a", "hash"]), 6))


def test_the_second_look_on_arrays_is_near_allowed() -> None:
    """looks_alike answers as detail.near_allowed for every mix of low information and known
    or unknown thumbnails (a thumbnail unknown is b"": an older record, a query by hash)."""
    rng = random.Random(4)
    base = rng.randbytes(DETAIL_SIDE**2)
    thumbnails = [b"", base, thumbnail_near(base, rng, 30), rng.randbytes(DETAIL_SIDE**2)]
    cases = list(itertools.product([False, True], thumbnails, [False, True], thumbnails))
    allowed = looks_alike(
        np.array([c[0] for c in cases]), np.array([len(c[1]) > 0 for c in cases]),
        np.array([c[2] for c in cases]), np.array([len(c[3]) > 0 for c in cases]),
        lambda pairs: (stack(cases[i][1] for i in pairs), stack(cases[i][3] for i in pairs)),
    )  # fmt: skip
    assert allowed.tolist() == [near_allowed(*case) for case in cases]
    assert 0 < sum(allowed) < len(cases)


def real_copies(folder: Path, photo) -> list[Path]:
    """Photographs and their turned, mirrored, cropped and resized copies, a picture alone
    and a blank one: what --transforms pairs, confirmed on pixels."""
    folder.mkdir()
    files = []
    for n, name in enumerate(("motorcycle_left.png", "coffee.png", "chelsea.png")):
        picture = photo.image(name).convert("RGB")
        w, h = picture.size
        copies = {
            "original.jpg": picture,
            "rot90.jpg": picture.transpose(Image.Transpose.ROTATE_90),
            "mirror.png": picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "crop.jpg": picture.crop((w * 70 // 741, h // 25, w * 663 // 741, h * 21 // 25)),
            "small.jpg": picture.resize((picture.width // 3, picture.height // 3)),
        }
        for suffix, image in copies.items():
            image.save(folder / f"{n}-{suffix}")
            files.append(folder / f"{n}-{suffix}")
    Image.new("RGB", (200, 150), (250, 250, 250)).save(folder / "blank.png")
    Image.new("RGB", (300, 100), (245, 245, 245)).save(folder / "blank2.png")
    return [*files, folder / "blank.png", folder / "blank2.png"]


def test_bulk_pairs_through_transforms_as_put_does(tmp_path: Path, photo) -> None:
    paths = real_copies(tmp_path / "pics", photo)
    random.Random(2).shuffle(paths)
    items = [(path, fingerprint(path), os.stat(path)) for path in paths]
    transforms = ["rotate", "flip", "crop"]
    with Index.open(tmp_path / "one", transforms=transforms) as one:
        each = [one.put(*item) for item in items]
        expected = pairs_of(one)
    with Index.open(tmp_path / "many", transforms=transforms) as many:
        assert shown(many.put_many(items)) == shown(each)
        assert pairs_of(many) == expected
    with Index.open(tmp_path / "bulk", transforms=transforms) as bulk:
        bulk.put_bulk(items, batch=6)
        assert pairs_of(bulk) == expected and bulk.check() == []
    assert {t for *_, t in expected} >= {None, "rot90", "rot270", "flip_lr", "crop", "uncrop"}


def test_a_large_scan_through_the_bulk_path_stores_what_the_batched_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """update() of BULK_FROM files or more goes through put_bulk, hashed in worker processes:
    the same groups, failures and notes as the ordinary path, on real files."""
    from dupwatch.index import update as update_module

    from support import SKIMAGE_DATA

    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"):
        picture = Image.open(SKIMAGE_DATA / name).convert("RGB")
        stem = Path(name).stem
        picture.save(pics / f"{stem}.jpg", quality=92)
        picture.save(pics / f"{stem}_again.png")  # a near copy (lossless of the JPEG's source)
        picture.resize((200, 150)).save(pics / f"{stem}_small.jpg", quality=70)
        (pics / f"{stem}_copy.jpg").write_bytes((pics / f"{stem}.jpg").read_bytes())
    (pics / "broken.jpg").write_bytes((pics / "coffee.jpg").read_bytes()[:300])
    (pics / "empty.png").write_bytes(b"")

    def scanned(bulk_from: int) -> tuple[list, list, int, int]:
        monkeypatch.setattr(update_module, "BULK_FROM", bulk_from)
        with Index.open(tmp_path / f"index-{bulk_from}") as index:
            report = index.update([pics], workers=2)
            groups = [
                (g.keep.fspath, sorted((m.record.fspath, m.kind, m.distance) for m in g.members))
                for g in index.groups()
            ]
            failed = [(os.fsdecode(e.path), e.reason) for e in report.failed]
            return sorted(groups), failed, report.hashed, len(report.results)

    *ordinary, results = scanned(10**9)
    *bulk, no_results = scanned(1)
    assert (results, no_results) == (20, 0)  # put_bulk reports no per-file results
    assert bulk == ordinary
    groups, failed, hashed = bulk
    assert hashed == 20 and len(groups) == 5
    assert [Path(path).name for path, _ in failed] == ["broken.jpg", "empty.png"]


def test_the_catalog_read_from_encoded_records_equals_the_decoded_one(tmp_path: Path) -> None:
    stat = os.stat(tmp_path)
    with Index.open(tmp_path / "index") as index:
        index.put_bulk((tmp_path / name, fp, stat) for name, fp in fingerprints(4, 300))
        with index.store.read() as txn:
            decoded = Catalog.of(index.store.records(txn))
            for chunk in (7, 65536):  # chunks that end inside the records and past them
                read = Catalog.read(index.store, txn, chunk=chunk)
                for field in fields(Catalog):
                    mine, theirs = getattr(read, field.name), getattr(decoded, field.name)
                    assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), field
    assert decoded.has_centre.any() and not decoded.has_centre.all()
    assert decoded.low.any() and decoded.thumbnail.any() and not decoded.thumbnail.all()
