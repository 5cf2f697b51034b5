"""Pictures inside screenshots: a photo shown in an image viewer's window or on a phone.

geometry.border_box trims uniform borders that centre the picture (letterbox bars, padding).
A screenshot's surroundings are not one colour and not centred: a title bar, a toolbar or a
phone's status and navigation bars (strips of their own colour with a little text or a few
icons), and bars of uneven thickness. frame_box peels those from the sides of the thumbnail:

- a uniform line (every pixel within BAR_TOLERANCE of the line's median), as border_box does;
- strips: bands of lines, at most STRIP_SHARE of the side in all, each line mostly
  (STRIP_COVER) one colour, the colour constant along a band (within STRIP_DRIFT) and changing
  abruptly (STRIP_STEP) from one band to the next (a title bar, then a toolbar), the last band
  followed by a bar, and of another colour than that bar unless it is at the very edge (a
  phone's status bar often has the colour of the bars under it; a diagram's title has the
  colour of its page). A sky or any smooth gradient changes colour gradually, a photo's band is
  not mostly one colour, and the top of a drawing on a plain background (a glyph, an icon) is
  followed by more drawing, not by a bar: none of them is taken for a strip.

The box is used only when the screenshot is evident: strips were peeled, uniform bars were
found on two sides or more, and the picture keeps at least MIN_KEPT of each side. Otherwise
frame_box says None and border_box decides as before (uneven bars alone, a mat, a drawing on a
plain background: trimming those to what they hold made two sizes of one glyph hash apart).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

BAR_TOLERANCE = 2
STRIP_SHARE = 0.10
MIN_STRIP = 0.02  # of the side: a title or status bar is 3-6% of a screenshot's height
MIN_STRIP_LINES = 3  # an antialiased edge of a drawing is one or two lines
STRIP_COVER = 0.6
STRIP_TOLERANCE = 10
STRIP_DRIFT = 3
STRIP_STEP = 20
MIN_KEPT = 0.3  # a landscape photo on a portrait phone keeps ~35% of the height
MIN_BAR = 2  # thumbnail lines: a bar thinner than this is an edge of the photo, not a frame
PASSES = 6


def frame_box(thumb: NDArray[Any]) -> tuple[int, int, int, int] | None:
    """The picture inside a screenshot's frame, as (left, top, right, bottom) of the grey
    thumbnail, or None when no frame is evident."""
    height, width = thumb.shape
    pixels = thumb.astype(np.int16)
    edges = [0, 0, width, height]  # left, top, right, bottom
    peeled = {"strip": False, "bars": [0, 0, 0, 0]}
    for _ in range(PASSES):
        before = list(edges)
        for side in range(4):
            _peel(pixels, edges, side, peeled, (width, height))
        if edges == before:
            break
    left, top, right, bottom = edges
    if right - left < MIN_KEPT * width or bottom - top < MIN_KEPT * height:
        return None
    sides_with_bars = sum(bar >= MIN_BAR for bar in peeled["bars"])
    if sides_with_bars < 2 or not peeled["strip"]:
        return None
    if (left, top, right, bottom) == (0, 0, width, height):
        return None
    return left, top, right, bottom


def _lines(pixels: NDArray[Any], edges: list[int], side: int) -> NDArray[Any]:
    """The lines of the current box, outermost first, as rows (side 0 left, 1 top, 2 right,
    3 bottom)."""
    left, top, right, bottom = edges
    box = pixels[top:bottom, left:right]
    return {0: box.T, 1: box, 2: box.T[::-1], 3: box[::-1]}[side]


def _peel(pixels, edges, side, peeled, size) -> None:
    lines = _lines(pixels, edges, side)
    if lines.shape[0] == 0 or lines.shape[1] == 0:
        return
    step = 1 if side < 2 else -1
    bars = _uniform_run(lines)
    if bars:
        edges[side] += step * bars
        peeled["bars"][side] += bars
        return
    length = size[side % 2]  # the width for a left or right strip, the height for the others
    outer = edges[side] if side < 2 else size[side % 2] - edges[side]
    at_edge = outer <= MIN_STRIP * length  # nothing but a line or two before it
    strip = _strip_run(lines, int(STRIP_SHARE * length), at_edge)
    if strip >= max(MIN_STRIP_LINES, MIN_STRIP * length):
        edges[side] += step * strip
        peeled["strip"] = True


def _uniform_run(lines: NDArray[Any]) -> int:
    """How many outer lines are uniform; looked at a few at a time (most pictures have none)."""
    run, chunk = 0, 4
    while run < lines.shape[0]:
        part = lines[run : run + chunk]
        colour = np.median(part, axis=1, keepdims=True)
        uniform = (np.abs(part - colour) <= BAR_TOLERANCE).all(axis=1)
        failing = np.flatnonzero(~uniform)
        if failing.size:
            return run + int(failing[0])
        run += part.shape[0]
        chunk *= 2
    return run


def _strip_run(lines: NDArray[Any], longest: int, at_edge: bool) -> int:
    """How many outer lines form strips ending at a bar (see the module's doc), 0 when they
    do not: one band or more, each mostly one colour along its whole length, the colour
    changing abruptly from band to band, the last followed by a uniform line."""
    head = lines[: longest + 1]
    colours = np.median(head, axis=1)
    cover = (np.abs(head - colours[:, None]) <= STRIP_TOLERANCE).mean(axis=1)
    uniform = (np.abs(head - colours[:, None]) <= BAR_TOLERANCE).all(axis=1)
    run, band_colour = 0, colours[0]
    while run < len(colours) and not uniform[run]:
        if cover[run] < STRIP_COVER:
            return 0  # a line of a picture, not of a strip
        if abs(colours[run] - band_colour) > STRIP_DRIFT:
            if abs(colours[run] - colours[run - 1]) < STRIP_STEP:
                return 0  # the colour drifts (a gradient, a sky): no strip
            band_colour = colours[run]  # the next band (a toolbar under a title bar)
        run += 1
    if not 0 < run < len(colours) or run > longest:
        return 0
    if abs(band_colour - colours[run]) >= STRIP_STEP or at_edge:
        return run
    # A band of its own colour: drawn lines (a toolbar's buttons), then margin lines of the
    # same colour, then a bar of another colour. Text on the page's own colour (a diagram's
    # title) is followed by more page, not by a bar; a status bar at the very edge is a strip
    # even in the colour of the bars under it.
    end = run
    while end < len(colours) and uniform[end] and abs(colours[end] - band_colour) < STRIP_STEP:
        end += 1
    return end if end < len(colours) and uniform[end] else 0
