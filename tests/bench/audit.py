"""A precision audit: does each pair `dupwatch scan` reports look like one picture to a person?

    python tests/bench/audit.py FOLDER [--json SCAN.json] [--sheet SHEET.png] [--index DIR]
    python tests/bench/audit.py FOLDER --labels tests/bench/eye_labels.json

runs the real `dupwatch scan --json FOLDER` (or reads a saved answer) and checks every `near` and
`pixel` pair of every group (keeper and member) with a slower comparison that shares nothing
with dupwatch's hash: both pictures fully decoded, frame one, EXIF orientation applied,
composited on black AND on white (a drawing carried by alpha shows on one or both), cut to
what differs from the background of their corners, shrunk to AUDIT_SIDE square in colour
(BOX filter), and compared pixel by pixel on each background. They are the same picture when,
on both backgrounds, the mean difference is small and few pixels differ much, and their
aspect ratios agree (a picture and its crop by a few per cent still do). Prints each pair it
disagrees with, the counts, the largest group, and writes a contact sheet of the worst groups
(checkerboard behind transparency, red frame: the audit says "not the same picture").

With --labels it judges only pairs a person labelled by eye (eye_labels.json, drawn from a scan
of corpus.py's folder) and prints how often it agrees with the person, and what the person's
labels say of the whole scan they were drawn from: how far the audit's counts can be trusted.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

AUDIT_SIDE = 32  # the comparison's square side
MIN_SIDE = 8
MEAN_LIMIT = 18.0  # mean abs difference (0-255, max over RGB) on either background
BLOCK_LIMIT = 40.0  # ... and in any one block of a 4x4 grid
# Sizes of one icon are drawn anew for each size (a 16 px icon is hinted, not shrunk): when
# the shorter sides differ by SIZE_RATIO or more, they are compared at half the smaller size,
# with RESIZED_MEAN_LIMIT and RESIZED_BLOCK_LIMIT. Chosen on 71 pairs labelled by eye.
SIZE_RATIO = 1.4
RESIZED_MEAN_LIMIT = 30.0
RESIZED_BLOCK_LIMIT = 72.0
SHARE_LIMIT = 0.10  # share of pixels differing by more than FAR
FAR = 64
ASPECT_LIMIT = 0.35  # |log(aspect a / aspect b)|: 4:3 against 16:9 (0.29) is still one picture
TRIM_TOLERANCE = 12  # a corner-coloured margin is trimmed before comparing
CORRELATION_LIMIT = 0.93  # grey correlation on both backgrounds: the same drawing, recoloured
MIN_SPREAD = 8.0  # grey std (0-255) below which a thumbnail has no drawing to correlate


@dataclass
class Verdict:
    same: bool
    mean: float  # worst of the two backgrounds
    share: float
    aspect: float
    reason: str
    corr: float = 0.0


def load(path: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as img:
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8), "L")
            return img.convert("RGBA")


def on_background(img: Image.Image, colour: int) -> np.ndarray:
    base = Image.new("RGBA", img.size, (colour, colour, colour, 255))
    return np.asarray(Image.alpha_composite(base, img).convert("RGB"), dtype=np.int16)


def content_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """What differs from the median corner colour (a uniform margin is framing, not picture)."""
    h, w, _ = pixels.shape
    corners = np.array([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    colour = np.median(corners, axis=0)
    differs = np.abs(pixels - colour).max(axis=2) > TRIM_TOLERANCE
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return 0, 0, w, h
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def shrunk(img: Image.Image, side: int) -> dict[int, np.ndarray]:
    small = img.resize((side, side), Image.Resampling.BOX)
    return {colour: on_background(small, colour) for colour in (0, 255)}


def pair_side(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Compared at the smaller picture's own size (at most AUDIT_SIDE): a 16 px icon blown up
    to 32 is blocky where its 48 px sibling is smooth, and that is no difference a person sees;
    at half that when the sizes differ by SIZE_RATIO or more."""
    side = max(MIN_SIDE, min(AUDIT_SIDE, *a, *b))
    return max(MIN_SIDE, side // 2) if resized(a, b) else side


def resized(a: tuple[int, int], b: tuple[int, int]) -> bool:
    small, large = sorted((max(1, min(a)), max(1, min(b))))
    return large / small >= SIZE_RATIO


def prepared(path: str, side: int, undo: Image.Transpose | None = None) -> dict:
    """Both framings of a picture: as it is, and cut to what differs from its margin; `undo`
    turns it first."""
    img = load(path)
    if undo is not None:
        img = img.transpose(undo)
    boxes = [content_box(on_background(img, colour)) for colour in (0, 255)]
    # The same box on both backgrounds (the union), so they stay comparable.
    box = (min(b[0] for b in boxes), min(b[1] for b in boxes),
           max(b[2] for b in boxes), max(b[3] for b in boxes))  # fmt: skip
    cut = img.crop(box)
    return {
        "whole": shrunk(img, side),
        "cut": shrunk(cut, side),
        "aspects": (img.width / max(img.height, 1), cut.width / max(cut.height, 1)),
        "size": img.size,
    }


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Of the grey levels: 1 for the same drawing whatever its brightness, contrast or tint."""
    x, y = a.mean(axis=2).ravel(), b.mean(axis=2).ravel()
    x, y = x - x.mean(), y - y.mean()
    norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / norm) if norm > 0 else 0.0


def block_max(diff: np.ndarray) -> float:
    """The largest mean difference over the 16 blocks of a 4x4 grid: an emblem, a word, a
    charge level drawn otherwise is a different picture, however alike the rest."""
    q = diff.shape[0] // 4
    return float(diff[: q * 4, : q * 4].reshape(4, q, 4, q).mean(axis=(1, 3)).max())


def judge_framing(
    a: dict, b: dict, framing: str, index: int, limits: tuple[float, float]
) -> Verdict:
    aspect = abs(float(np.log(a["aspects"][index] / b["aspects"][index])))
    means, shares, corrs, blocks = [], [], [], []
    for colour in (0, 255):
        pa, pb = a[framing][colour], b[framing][colour]
        diff = np.abs(pa - pb).max(axis=2)
        means.append(float(diff.mean()))
        shares.append(float((diff > FAR).mean()))
        blocks.append(block_max(diff))
        # A colour edit (tint, gamma, grayscale) keeps the drawing: judged by correlation,
        # only where both pictures have a drawing to correlate.
        spread = min(pa.mean(axis=2).std(), pb.mean(axis=2).std())
        corrs.append(correlation(pa, pb) if spread >= MIN_SPREAD else -1.0)
    mean, share, corr, block = max(means), max(shares), min(corrs), max(blocks)
    if aspect > ASPECT_LIMIT:
        return Verdict(False, mean, share, aspect, "aspect", corr)
    mean_limit, block_limit = limits
    if mean <= mean_limit and share <= SHARE_LIMIT:
        if block > block_limit:  # alike overall, but one part drawn otherwise
            return Verdict(False, mean, share, aspect, "detail", corr)
        return Verdict(True, mean, share, aspect, "", corr)
    if corr >= CORRELATION_LIMIT:
        return Verdict(True, mean, share, aspect, "edit", corr)
    return Verdict(False, mean, share, aspect, "mean" if mean > mean_limit else "pixels", corr)


def judge(a: dict, b: dict) -> Verdict:
    """The better of the two framings (a sprite moved in its canvas, a copy with a margin)."""
    limits = (MEAN_LIMIT, BLOCK_LIMIT)
    if resized(a["size"], b["size"]):
        limits = (RESIZED_MEAN_LIMIT, RESIZED_BLOCK_LIMIT)
    whole, cut = judge_framing(a, b, "whole", 0, limits), judge_framing(a, b, "cut", 1, limits)
    if whole.same != cut.same:
        return whole if whole.same else cut
    return whole if whole.mean <= cut.mean else cut


def run_scan(folder: str, index: str | None, extra: list[str]) -> tuple[dict, str]:
    index = index or tempfile.mkdtemp(prefix="audit-index-")
    cmd = ["dupwatch", "--index", index, "scan", "--json", *extra, folder]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"audit: {' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout), done.stderr


# A member's "transform" says how it is the keeper (or its "via") transformed; this turns it
# back (dupwatch.index.transforms.ORIENTATIONS, as Pillow transposes).
UNDO = {
    "rot90": Image.Transpose.ROTATE_270,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_90,
    "flip_lr": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip_tb": Image.Transpose.FLIP_TOP_BOTTOM,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


def audit(scan: dict) -> tuple[list[dict], dict]:
    """Judge every near/pixel member against what it was matched to: the keeper, or the
    member named by its "via"; a turned copy turned back first. Crops ("crop", "uncrop") are
    counted apart (a crop is another framing, which this comparison does not look for)."""
    cache: dict[tuple[str, int, str | None], dict | None] = {}

    def get(path: str, side: int, undo: str | None = None) -> dict | None:
        if (path, side, undo) not in cache:
            try:
                cache[path, side, undo] = prepared(path, side, UNDO.get(undo or ""))
            except Exception as error:  # noqa: BLE001 - an unreadable file is reported, not fatal
                print(f"audit: cannot read {path}: {error}", file=sys.stderr)
                cache[path, side, undo] = None
        return cache[path, side, undo]

    rows = []
    for number, group in enumerate(scan["groups"]):
        by_path = {f["path"]: f for f in group["files"]}
        for member in group["files"][1:]:
            if member["kind"] not in ("near", "pixel"):
                continue
            other = by_path.get(member.get("via", ""), group["files"][0])
            transform = member.get("transform")
            if transform in ("crop", "uncrop"):
                rows.append({"group": number, "keep": other["path"], "path": member["path"],
                             "kind": member["kind"], "distance": member["distance"],
                             "transform": transform, "same": True, "unaudited": True,
                             "mean": 0.0, "share": 0.0, "aspect": 0.0, "corr": 0.0,
                             "reason": "crop"})  # fmt: skip
                continue
            side = pair_side((other["width"], other["height"]), (member["width"], member["height"]))
            a, b = get(other["path"], side), get(member["path"], side, transform)
            if a is None or b is None:
                continue
            verdict = judge(a, b)
            rows.append({"group": number, "keep": other["path"], "path": member["path"],
                         "kind": member["kind"], "distance": member["distance"],
                         "transform": transform, "same": verdict.same,
                         "mean": round(verdict.mean, 1), "share": round(verdict.share, 3),
                         "aspect": round(verdict.aspect, 3), "corr": round(verdict.corr, 3),
                         "reason": verdict.reason})  # fmt: skip
    sizes = [len(g["files"]) for g in scan["groups"]]
    wrong = [r for r in rows if not r["same"]]
    summary = {
        "groups": len(scan["groups"]),
        "files_in_groups": sum(sizes),
        "near_pixel_pairs": len(rows),
        "wrong_pairs": len(wrong),
        "wrong_share": round(len(wrong) / max(len(rows), 1), 4),
        "groups_with_wrong": len({r["group"] for r in wrong}),
        "wrong_at_0": sum(r["distance"] == 0 for r in wrong),
        "largest_group": max(sizes, default=0),
        "low_information": len(scan.get("low_information", [])),
        "crop_pairs_unaudited": sum(bool(r.get("unaudited")) for r in rows),
    }
    return rows, summary


def judge_labelled(folder: Path, labels: dict) -> dict:
    """The audit's verdict on each labelled pair present under `folder`, against the person's."""
    counts = {
        (audit, person): 0 for audit in ("same", "different") for person in ("same", "different")
    }
    missing, disagreements = 0, []
    for a, b, person, _ in labels["pairs"]:
        pa, pb = folder / a, folder / b
        if not (pa.is_file() and pb.is_file()):
            missing += 1
            continue
        sizes = []
        for path in (pa, pb):
            with Image.open(path) as img:
                sizes.append(img.size)
        side = pair_side(*sizes)
        verdict = judge(prepared(str(pa), side), prepared(str(pb), side))
        audit = "same" if verdict.same else "different"
        counts[audit, person] += 1
        if audit != person:
            disagreements.append(f"audit {audit}, person {person} ({verdict.reason}): {a}  ~  {b}")
    return {"counts": counts, "missing": missing, "disagreements": disagreements}


def person_estimate(labels: dict) -> tuple[float, float, float]:
    """The share of the scan's near/pixel pairs a person calls different, from the stratified
    sample (strata: the audit's verdicts when it was drawn), with a 95% interval (normal
    approximation per stratum; a stratum's variance is taken as at least one pair's, so one
    with no different pair still has an interval)."""
    share, variance, total = 0.0, 0.0, 0
    for stratum, (population, _) in labels["strata"].items():
        audit = "wrong" if stratum == "audit_wrong" else "right"
        labelled = [p for p in labels["pairs"] if p[3] == audit]
        different = sum(p[2] == "different" for p in labelled)
        p = different / len(labelled)
        p_var = max(p * (1 - p), 1 / len(labelled)) / len(labelled)
        share += population * p
        variance += population**2 * p_var
        total += population
    spread = 1.96 * math.sqrt(variance) / total
    return share / total, max(0.0, share / total - spread), share / total + spread


def checkerboard(size: tuple[int, int]) -> Image.Image:
    tile = 6
    y, x = np.mgrid[: size[1], : size[0]]
    board = np.where(((x // tile) + (y // tile)) % 2 == 0, 200, 240).astype(np.uint8)
    return Image.fromarray(board, "L").convert("RGBA")


def thumb(path: str, side: int) -> Image.Image:
    try:
        img = load(path)
    except Exception:  # noqa: BLE001
        return Image.new("RGBA", (side, side), (255, 0, 255, 255))
    img.thumbnail((side, side))
    back = checkerboard(img.size)
    return Image.alpha_composite(back, img)


def contact_sheet(scan: dict, rows: list[dict], out: Path, groups: int = 12, per: int = 10,
                  side: int = 72) -> None:  # fmt: skip
    """The groups with the most wrong pairs, one row each: keeper first (blue frame), members
    with their distance; a red frame where the audit says "not the same picture"."""
    verdicts = {(r["group"], r["path"]): r for r in rows}
    wrong_by_group: dict[int, int] = {}
    for r in rows:
        if not r["same"]:
            wrong_by_group[r["group"]] = wrong_by_group.get(r["group"], 0) + 1
    worst = sorted(wrong_by_group, key=lambda g: -wrong_by_group[g])[:groups]
    if not worst:
        worst = list(range(min(groups, len(scan["groups"]))))
    cell = side + 8
    label = 14
    sheet = Image.new("RGB", (cell * (per + 1) + 220, (cell + label) * max(len(worst), 1)),
                      "white")  # fmt: skip
    draw = ImageDraw.Draw(sheet)
    for row, number in enumerate(worst):
        group = scan["groups"][number]
        y = row * (cell + label)
        wrong = wrong_by_group.get(number, 0)
        size_note = f"group {number}: {len(group['files'])} files, {wrong} wrong"
        draw.text((cell * (per + 1) + 4, y + 4), size_note, fill="black")
        draw.text((cell * (per + 1) + 4, y + 20), Path(group["files"][0]["path"]).name[:34],
                  fill="gray")  # fmt: skip
        for col, member in enumerate(group["files"][: per + 1]):
            x = col * cell
            verdict = verdicts.get((number, member["path"]))
            colour = "blue" if col == 0 else ("red" if verdict and not verdict["same"] else "green")
            draw.rectangle((x, y, x + cell - 2, y + cell - 2), outline=colour, width=3)
            image = thumb(member["path"], side)
            sheet.paste(image.convert("RGB"), (x + 4 + (side - image.width) // 2,
                                               y + 4 + (side - image.height) // 2))  # fmt: skip
            text = "keep" if col == 0 else f"{member['kind'][0]}{member['distance']}"
            if verdict:
                text += f" {verdict['mean']:.0f}"
            draw.text((x + 2, y + cell), text, fill=colour)
    sheet.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--json", dest="saved", help="a saved `dupwatch scan --json` answer")
    parser.add_argument("--index", help="the index folder for the scan (default: a new one)")
    parser.add_argument("--sheet", type=Path, default=Path("audit-sheet.png"))
    parser.add_argument("--rows", type=Path, help="write every pair's verdict here (JSON lines)")
    parser.add_argument("--scan-args", default="", help="extra options for dupwatch scan")
    parser.add_argument("--quiet", action="store_true", help="do not list each wrong pair")
    parser.add_argument("--labels", type=Path, help="judge only these pairs labelled by eye")
    args = parser.parse_args()
    if args.labels:
        report_labelled(Path(args.folder), json.loads(args.labels.read_text()), args.quiet)
        return
    if args.saved:
        scan, stderr = json.loads(Path(args.saved).read_text()), ""
    else:
        scan, stderr = run_scan(args.folder, args.index, args.scan_args.split())
    rows, summary = audit(scan)
    if not args.quiet:
        for r in rows:
            if not r["same"]:
                print(f"wrong {r['kind']} {r['distance']:2} mean {r['mean']:5.1f} "
                      f"share {r['share']:.2f} aspect {r['aspect']:.2f} ({r['reason']}): "
                      f"{r['keep']}  ~  {r['path']}")  # fmt: skip
    warning_lines = [line for line in stderr.splitlines() if "Warning" in line]
    summary["stderr_warnings"] = len(warning_lines)
    print(json.dumps(summary))
    if args.rows:
        args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows))
    contact_sheet(scan, rows, args.sheet)
    print(f"audit: contact sheet {args.sheet}", file=sys.stderr)


def report_labelled(folder: Path, labels: dict, quiet: bool) -> None:
    result = judge_labelled(folder, labels)
    if not quiet:
        print("\n".join(result["disagreements"]))
    counts = result["counts"]
    judged = sum(counts.values())
    agree = counts["same", "same"] + counts["different", "different"]
    print(f"{judged} labelled pairs judged ({result['missing']} not in {folder})")
    print("              person same  person different")
    for audit in ("same", "different"):
        print(f"audit {audit:9} {counts[audit, 'same']:11} {counts[audit, 'different']:17}")
    print(f"the audit agrees with the person on {agree / max(judged, 1):.1%}")
    share, low, high = person_estimate(labels)
    print(f"of the scan the labels were drawn from, the person calls {share:.1%} of the near/pixel"
          f" pairs different (95% interval {low:.1%}-{high:.1%})")  # fmt: skip


if __name__ == "__main__":
    main()
