"""dupwatch report: the HTML page opened in real headless Chromium (Debian's `chromium`).

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): the
test sees every request the page makes and every console message or exception.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import stat
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dupwatch.daemon.review.report import PAGE_SIZE, write_report
from dupwatch.index import FileRecord, Group, Kind
from dupwatch.index.cleanup.sidecars import find_sidecars, labels_of
from dupwatch.index.groups import Member

from support import DUPWATCH, dupwatch, photo

CHROMIUM = shutil.which("chromium") or "chromium"  # Debian's package `chromium`
PIPE = "--remote-debugging-pipe"
TIMEOUT_S = 60.0
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Chromium:
    """Headless Chromium with the DevTools protocol on fds 3 (commands) and 4 (replies)."""

    def __init__(self, profile: Path) -> None:
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()

        def at_3_and_4() -> None:  # runs in the child, before exec
            os.dup2(command_read, 3)
            os.dup2(reply_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", PIPE, "about:blank"],
            pass_fds=(3, 4, command_read, reply_write),
            preexec_fn=at_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(command_read)
        os.close(reply_write)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        attached = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=self.session)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while (reply := self._read(deadline)).get("id") != self._last_id:
            self.events.append(reply)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, session=self.session, **params)

    def open(self, path: Path) -> None:
        """Navigate to the file and wait for its load event."""
        self.events.clear()
        self.page("Page.navigate", url=path.as_uri())
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def complaints(self) -> list[dict[str, Any]]:
        """Console errors and warnings, uncaught exceptions, browser log errors."""
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params)
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
                found.append(params)
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(params)
        return found

    def close(self) -> None:
        try:
            self.call("Browser.close")
        finally:
            self.process.wait(TIMEOUT_S)
            os.close(self._command_write)
            os.close(self._reply_read)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            if select.select([self._reply_read], [], [], left)[0]:
                chunk = os.read(self._reply_read, 1 << 20)
                assert chunk, f"Chromium went away (exit {self.process.poll()})"
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    assert shutil.which(CHROMIUM), "install Debian's chromium: apt-get install -y chromium"
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    """Three groups of 3, 2 and 2 images; the cat's copies carry different YOLO labels."""
    pics = tmp_path / "pics"
    pics.mkdir()
    photo("astronaut.png").save(pics / "astronaut.jpg", quality=92)
    shutil.copy(pics / "astronaut.jpg", pics / "astronaut_copy.jpg")
    photo("astronaut.png").resize((256, 256)).save(pics / "small.jpg", quality=80)
    photo("coffee.png").save(pics / "coffee.png")
    photo("coffee.png").save(pics / "coffee.webp", quality=80)
    photo("chelsea.png").save(pics / "cat.png")
    photo("chelsea.png").resize((300, 200)).save(pics / "cat_small.jpg", quality=85)
    (pics / "cat.txt").write_text("0 0.5 0.5 0.6 0.8\n")
    (pics / "cat_small.txt").write_text("3 0.5 0.5 0.6 0.8\n")  # another class: worth a look
    photo("rocket.jpg").save(pics / "rocket.jpg")  # no copy: not in the report
    return pics


@pytest.fixture
def report(pics: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    out = tmp_path / "report.html"
    result = dupwatch("report", "--out", out, index=index)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "3 groups, 7 files" in result.stderr
    return out


def test_the_report_loads_with_no_error_and_no_network(report: Path, browser: Chromium) -> None:
    browser.open(report)
    assert browser.complaints() == []
    foreign = [u for u in browser.requests() if u != report.as_uri() and not u.startswith("data:")]
    assert foreign == []
    assert browser.evaluate("document.querySelectorAll('main section').length") == 3
    assert browser.evaluate("document.querySelectorAll('main figure').length") == 7
    assert browser.evaluate("document.querySelectorAll('figure.keep').length") == 3
    thumbs = browser.evaluate(
        "[...document.querySelectorAll('figure img')].filter(i => i.complete && "
        "i.naturalWidth > 0 && i.src.startsWith('data:image/jpeg')).length"
    )
    assert thumbs == 7  # every thumbnail decoded
    first = browser.evaluate("document.querySelector('main section').innerText")
    assert "KEEP" in first and "astronaut.jpg" in first and "exact, distance 0" in first
    summary = browser.evaluate("document.getElementById('summary').textContent")
    assert summary.startswith("3 groups · 7 files · 4 copies to move · dedupe would free")
    conflicts = browser.evaluate(
        "[...document.querySelectorAll('.conflict')].map(n => n.textContent)"
    )
    assert conflicts == ["labels differ: cat.png: 0 ×1; cat_small.jpg: 3 ×1"]


def test_a_screenshot_of_the_report(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    profile = f"--user-data-dir={tmp_path / 'shot-profile'}"
    size = "--window-size=1200,900"
    command = [CHROMIUM, *HEADLESS, profile, f"--screenshot={shot}", size, report.as_uri()]
    subprocess.run(command, capture_output=True, timeout=TIMEOUT_S, check=True)
    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # pictures and text, not a blank page
    keep_outline = np.all(np.abs(pixels - (0x2A, 0x8A, 0x3A)) < 8, axis=-1)
    assert keep_outline.sum() > 200  # the keepers' green frames are drawn
    if os.environ.get("DUPWATCH_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DUPWATCH_KEEP_SCREENSHOT"])


def fake_groups(pics: Path, count: int) -> list[Group]:
    """`count` groups over the same real files (records with their own ids)."""
    files = sorted(p for p in pics.iterdir() if p.suffix in (".jpg", ".png", ".webp"))

    def record(file_id: int, path: Path) -> FileRecord:
        st = path.stat()
        with Image.open(path) as img:
            width, height = img.size
        digest = b"\0" * 16  # not read by the report
        fields = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, 0, digest, width, height)
        return FileRecord(file_id, bytes(path), *fields, "JPEG")

    groups = []
    for n in range(count):
        keep, copy = files[n % len(files)], files[(n + 1) % len(files)]
        member = Member(record(2 * n + 2, copy), n % 9, Kind.NEAR)
        groups.append(Group(record(2 * n + 1, keep), [member]))
    return groups


def test_many_groups_are_paged_and_stay_small(pics: Path, tmp_path: Path, browser: Chromium):
    count = 3 * PAGE_SIZE + 5
    out = tmp_path / "many.html"
    summary = write_report(fake_groups(pics, count), out, workers=1)
    assert summary.groups == count
    assert out.stat().st_size / count < 16_000  # bytes a group: thumbnails are small
    browser.open(out)
    assert browser.evaluate("document.querySelectorAll('main section').length") == PAGE_SIZE
    assert browser.evaluate("document.getElementById('pages').textContent") == "of 4"
    browser.evaluate("document.getElementById('next').click()")
    first_on_page_2 = browser.evaluate("document.querySelector('main section').id")
    assert first_on_page_2 == f"group-{PAGE_SIZE + 1}"
    browser.evaluate("const p = document.getElementById('page'); p.value = 4; p.onchange()")
    assert browser.evaluate("document.querySelectorAll('main section').length") == 5
    assert browser.complaints() == []


def test_file_names_cannot_inject_markup(tmp_path: Path, browser: Chromium) -> None:
    pics = tmp_path / "odd" / "a<"  # with the next name, the path holds "a</script><b>x.png"
    pics.mkdir(parents=True)
    photo("coffee.png").save(pics / "<!--<script>alert(1).png")
    shutil.copy(pics / "<!--<script>alert(1).png", pics / "script><b>x.png")
    index = tmp_path / "index"
    dupwatch("scan", pics, index=index)
    out = tmp_path / "odd.html"
    assert dupwatch("report", "--out", out, index=index).returncode == 0
    browser.open(out)
    assert browser.complaints() == []
    paths = browser.evaluate("[...document.querySelectorAll('.path')].map(n => n.textContent)")
    assert sorted(paths) == [str(pics / "<!--<script>alert(1).png"), f"{pics}/script><b>x.png"]
    assert "a</script><b>x.png" in paths[0] + paths[1]
    assert browser.evaluate("document.querySelectorAll('main b, main script').length") == 0


def test_open_hands_the_file_to_the_browser(report: Path, pics: Path, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    fake_browser = tmp_path / "browser.sh"  # stands in for the desktop's browser: records its URL
    fake_browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake_browser.chmod(fake_browser.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "again.html"
    index = tmp_path / "index"
    browser = {"BROWSER": str(fake_browser)}
    result = dupwatch("report", "--out", out, "--open", index=index, env=browser)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + TIMEOUT_S
    while not opened.exists() or not opened.read_text().strip():
        assert time.monotonic() < deadline, "the browser was never started"
        time.sleep(0.05)
    assert opened.read_text().strip() == out.as_uri()


def test_label_files_of_every_kind_are_read(tmp_path: Path) -> None:
    image = tmp_path / "images" / "val" / "x.jpg"
    image.parent.mkdir(parents=True)
    photo("coffee.png").save(image)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "x.txt").write_text("2 0.1 0.1 0.2 0.2\n2 0.5 0.5 0.1 0.1\n")
    (image.parent / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><object><name>cup</name></object>"
        "<object><name>saucer</name></object></annotation>"
    )
    (image.parent / "x.json").write_text(json.dumps({"shapes": [{"label": "cup", "points": []}]}))
    (image.parent / "x.png").write_bytes(b"")  # another image with the stem: never a label
    found = find_sidecars(bytes(image))
    assert [os.path.relpath(p, tmp_path) for p in map(os.fsdecode, found)] == [
        "images/val/x.json",
        "images/val/x.xml",
        "labels/val/x.txt",
    ]
    assert labels_of(found) == {"2": 2, "cup": 2, "saucer": 1}
    (image.parent / "x.xml").write_text("<annotation><object>")  # broken: skipped, not fatal
    assert labels_of(found) == {"2": 2, "cup": 1}
    assert labels_of([]) is None


def test_by_default_the_report_goes_to_the_cache_not_the_dataset(
    pics: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    cache = tmp_path / "cache"
    result = subprocess.run(
        [DUPWATCH, "--index", index, "report", "--progress"],
        cwd=pics,  # run from inside the dataset, as a person labelling it would
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = cache / "dupwatch" / "report.html"
    assert result.stdout.strip() == str(out) and out.exists()  # it says where it went
    assert not list(pics.glob("*.html"))
    assert "thumbnails: 7/7 files (100%)" in result.stderr  # --progress: plain lines off a TTY
    quiet = dupwatch("report", "--out", tmp_path / "r.html", index=index)
    assert "thumbnails" not in quiet.stderr  # not asked, not a TTY: no progress lines


def test_on_a_terminal_the_report_shows_its_progress(pics: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    terminal, stderr = pty.openpty()  # stderr is a terminal, as when a person runs it
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # its size
    try:
        result = subprocess.run(
            [DUPWATCH, "--index", index, "report", "--out", tmp_path / "r.html"],
            stderr=stderr, stdout=subprocess.PIPE, timeout=120,
        )  # fmt: skip
        os.close(stderr)
        shown = b""
        while select.select([terminal], [], [], 0.5)[0]:
            try:
                shown += os.read(terminal, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
    finally:
        os.close(terminal)
    assert result.returncode == 0
    assert b"\rthumbnails: 100%|" in shown and b"| 7/7 [" in shown


def wait_true(browser: Chromium, expression: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not browser.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.05)


def test_a_click_on_a_thumbnail_opens_the_picture_in_full(report: Path, pics: Path, browser):
    browser.open(report)
    assert browser.evaluate("document.getElementById('viewer').hidden") is True
    browser.evaluate("document.querySelector('main section figure img').click()")
    assert browser.evaluate("document.getElementById('viewer').hidden") is False
    shown = "document.querySelector('#panes img')"
    wait_true(browser, f"{shown}.complete && {shown}.naturalWidth > 0")
    assert browser.evaluate(f"{shown}.naturalWidth") == 512  # the file, not the thumbnail
    assert browser.evaluate(f"{shown}.src") == (pics / "astronaut.jpg").as_uri()
    assert browser.evaluate("document.getElementById('viewer-title').textContent") == (
        "astronaut.jpg"
    )
    browser.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    assert browser.evaluate("document.getElementById('viewer').hidden") is True
    assert browser.complaints() == []
    network = [u for u in browser.requests() if not u.startswith(("file:", "data:"))]
    assert network == []


def test_any_pair_side_by_side_at_the_same_size(report: Path, browser: Chromium) -> None:
    browser.open(report)
    cat = "[...document.querySelectorAll('main section')].find(s => s.innerText.includes('cat'))"
    browser.evaluate(f"{cat}.querySelector('button.beside').click()")
    wait_true(browser, "[...document.querySelectorAll('#panes img')].every(i => i.naturalWidth)")
    sizes = browser.evaluate(
        "[...document.querySelectorAll('#panes img')].map(i => {"
        "const r = i.getBoundingClientRect(); return [r.width, r.height, i.naturalWidth]; })"
    )
    assert len(sizes) == 2
    (width_a, height_a, natural_a), (width_b, height_b, natural_b) = sizes
    assert (width_a, height_a) == (width_b, height_b) and width_a > 200
    assert (natural_a, natural_b) == (451, 300)  # the keeper and its smaller copy
    text = browser.evaluate("document.getElementById('panes').innerText")
    assert "KEEP" in text and "to the keeper" in text and "451×300" in text and "300×200" in text
    assert "label files: cat.txt" in text and "label files: cat_small.txt" in text
    assert "labels: 0 ×1" in text and "labels: 3 ×1" in text
    browser.evaluate("document.getElementById('close').click()")
    # Any two of a group: picked one after the other.
    astronaut = "document.querySelector('main section')"
    browser.evaluate(
        f"const picks = {astronaut}.querySelectorAll('button.pick'); picks[1].click(); "
        "picks[2].click()"
    )
    assert browser.evaluate("document.querySelectorAll('#panes .pane').length") == 2
    assert browser.evaluate("document.getElementById('viewer-title').textContent") == (
        "side by side"
    )
    assert browser.complaints() == []


def test_class_names_come_from_the_dataset(pics: Path, tmp_path: Path, browser: Chromium):
    (pics / "classes.txt").write_text("person\nbicycle\ncar\ncat\n")
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    out = tmp_path / "named.html"
    assert dupwatch("report", "--out", out, index=index).returncode == 0
    browser.open(out)
    conflicts = browser.evaluate(
        "[...document.querySelectorAll('.conflict')].map(n => n.textContent)"
    )
    assert conflicts == ["labels differ: cat.png: person ×1; cat_small.jpg: cat ×1"]


def test_names_from_data_yaml_and_coco_categories(tmp_path: Path) -> None:
    from dupwatch.daemon.review.classnames import ClassNames

    dataset = tmp_path / "ds"
    (dataset / "labels" / "train").mkdir(parents=True)
    (dataset / "data.yaml").write_text(
        "path: .\ntrain: images/train\nnames:\n  0: person\n  1: traffic light\nnc: 2\n"
    )
    label = dataset / "labels" / "train" / "x.txt"
    label.write_text("1 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n0 0.3 0.3 0.1 0.1\n7 0 0 1 1\n")
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "instances_val.json").write_text(
        json.dumps({"images": [], "categories": [{"id": 18, "name": "dog"}]})
    )
    (coco / "images").mkdir()
    per_image = coco / "images" / "y.json"
    per_image.write_text(json.dumps({"annotations": [{"category_id": 18}, {"category_id": 3}]}))
    names = ClassNames()
    assert names.labels([bytes(label)]) == {"traffic light": 2, "person": 1, "7": 1}
    assert names.labels([bytes(per_image)]) == {"dog": 1, "3": 1}


def test_paths_wrap_at_separators_not_inside_names(tmp_path: Path, browser: Chromium) -> None:
    short = Path(tempfile.mkdtemp(dir="/tmp", prefix="dw"))  # every name fits on one line
    deep = short.joinpath(*[f"folder_{n}_of_set" for n in range(6)])
    deep.mkdir(parents=True)
    photo("coffee.png").save(deep / "picture_0001.png")
    shutil.copy(deep / "picture_0001.png", deep / "picture_0002.png")
    index = tmp_path / "index"
    dupwatch("scan", deep, index=index)
    out = tmp_path / "deep.html"
    assert dupwatch("report", "--out", out, index=index).returncode == 0
    browser.open(out)
    lines = browser.evaluate(
        "[...document.querySelectorAll('main .path')].map(p => Math.round("
        "p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight)))"
    )
    assert all(n >= 3 for n in lines), lines  # long enough to wrap...
    split_names = browser.evaluate(
        "[...document.querySelectorAll('main .path')].flatMap(p => [...p.childNodes])"
        ".filter(n => n.nodeType === Node.TEXT_NODE).filter(n => {"
        "const r = document.createRange(); r.selectNodeContents(n);"
        "return new Set([...r.getClientRects()].map(q => Math.round(q.top))).size > 1; })"
        ".map(n => n.textContent)"
    )
    assert split_names == []  # ...and no name is cut across two lines
    text = browser.evaluate("document.querySelector('main .path').textContent")
    assert text == str(deep / "picture_0001.png")  # <wbr> adds no characters
    shutil.rmtree(short)
