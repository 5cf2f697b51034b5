"""`dupwatch report`: one self-contained HTML file showing every duplicate group side by side.

Thumbnails are small JPEG data URIs; the page loads nothing from the network (a Content
Security Policy forbids it: only data: and the pictures' own file: URLs, opened in full on a
click, beside each other for a pair) and pages its groups with a few lines of plain script,
so 5,000 groups stay usable: only one page of groups is in the document at a time. Class ids
of label files are shown as the dataset names them (classnames.py).
"""

from __future__ import annotations

import html
import json
import logging
import os
import webbrowser
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dupwatch.daemon.render import human_size
from dupwatch.daemon.review.across import PairCount
from dupwatch.daemon.review.classnames import ClassNames
from dupwatch.daemon.review.destination import check_report_path, write_whole
from dupwatch.daemon.review.thumbnails import Progress, thumbnails
from dupwatch.index import FileRecord, Group
from dupwatch.index.cleanup.sidecars import DEFAULT_SIDECARS, find_sidecars

log = logging.getLogger(__name__)

PAGE_SIZE = 40  # groups in the document at once


@dataclass(frozen=True, slots=True)
class ReportSummary:
    groups: int
    files: int
    duplicates: int
    freed_bytes: int
    label_conflicts: int
    out: Path


def write_report(
    groups: Sequence[Group],
    out: str | os.PathLike,
    *,
    pairs: Sequence[PairCount] = (),
    sidecars: Sequence[str] = DEFAULT_SIDECARS,
    workers: int | None = None,
    title: str = "dupwatch: duplicate images",
    progress: Progress | None = None,
) -> ReportSummary:
    """Write the report to `out` (whole or not at all: a temporary file renamed into place);
    `progress(done, total)` follows the thumbnails. Raises DupwatchError naming the file
    when it cannot be written."""
    target = check_report_path(out)
    records = [r for g in groups for r in (g.keep, *(m.record for m in g.members))]
    paths = list(dict.fromkeys(r.path for r in records))
    thumbs = dict(zip(paths, thumbnails(paths, workers, progress), strict=True))
    names = ClassNames()
    data = [_group_json(n, g, thumbs, sidecars, names) for n, g in enumerate(groups, 1)]
    summary = _summary(groups, data, target)
    page = render_page(data, summary, pairs, title)
    write_whole(target, page)
    return summary


def open_in_browser(path: str | os.PathLike) -> bool:
    """Open the report in the default browser; False when none could be started."""
    return webbrowser.open(Path(path).absolute().as_uri())


def _group_json(
    number: int,
    group: Group,
    thumbs: dict[bytes, str],
    sidecars: Sequence[str],
    names: ClassNames,
) -> dict:
    files = [_file_json(group.keep, "keep", 0, thumbs, sidecars, names)]
    files += [
        _file_json(m.record, str(m.kind), m.distance, thumbs, sidecars, names, m.transform)
        for m in group.members
    ]
    return {
        "n": number,
        "files": files,
        "freed": sum(m.record.size for m in group.members),
        "conflict": _label_conflict(files),
    }


def _file_json(
    record: FileRecord,
    kind: str,
    distance: int,
    thumbs: dict[bytes, str],
    sidecars: Sequence[str],
    names: ClassNames,
    transform: str | None = None,
) -> dict:
    found = find_sidecars(record.path, sidecars)
    labels = names.labels(found)
    folder = os.path.dirname(record.path)
    return {
        "path": record.path.decode("utf-8", "backslashreplace"),
        "url": "file://" + quote(record.path),  # the picture in full, opened from the disk
        "sidecars": [os.fsdecode(os.path.relpath(s, folder)) for s in found],
        "kind": kind,
        "distance": distance,
        "transform": transform or "",
        "size": f"{record.width}\u00d7{record.height}",
        "bytes": human_size(record.size),
        "thumb": thumbs.get(record.path, ""),
        "labels": None if labels is None else _label_text(labels),
    }


def _label_text(labels: Counter[str]) -> str:
    if not labels:
        return "no objects"
    return ", ".join(f"{name} \u00d7{count}" for name, count in sorted(labels.items()))


def _label_conflict(files: list[dict]) -> str:
    """A note when labelled copies of one picture carry different labels, else ""."""
    labelled = [f for f in files if f["labels"] is not None]
    if len({f["labels"] for f in labelled}) < 2:
        return ""
    parts = [f"{os.path.basename(f['path'])}: {f['labels']}" for f in labelled]
    return "labels differ: " + "; ".join(parts)


def _summary(groups: Sequence[Group], data: list[dict], out: Path) -> ReportSummary:
    duplicates = sum(len(g.members) for g in groups)
    return ReportSummary(
        groups=len(groups),
        files=len(groups) + duplicates,
        duplicates=duplicates,
        freed_bytes=sum(d["freed"] for d in data),
        label_conflicts=sum(1 for d in data if d["conflict"]),
        out=out,
    )


def render_page(
    data: list[dict], summary: ReportSummary, pairs: Sequence[PairCount], title: str
) -> str:
    # "<" escaped inside the JSON, so no file name can close the script element.
    payload = json.dumps(data, ensure_ascii=True).replace("<", "\\u003c")
    head = (
        f"{summary.groups} groups &middot; {summary.files} files &middot; "
        f"{summary.duplicates} copies to move &middot; "
        f"dedupe would free {html.escape(human_size(summary.freed_bytes))}"
    )
    if summary.label_conflicts:
        head += f" &middot; {_count(summary.label_conflicts, 'group')} whose labels differ"
    return _PAGE.format(
        title=html.escape(title),
        summary=head,
        pairs=_pairs_table(pairs),
        page_size=PAGE_SIZE,
        payload=payload,
        style=_STYLE,
        script=_SCRIPT,
    )


def _pairs_table(pairs: Sequence[PairCount]) -> str:
    if not pairs:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(p.a)} &ndash; {html.escape(p.b)}</td><td>{p.groups}</td>"
        f"<td>{p.files_a} + {p.files_b}</td></tr>"
        for p in pairs
    )
    return (
        '<table class="pairs"><caption>Pictures shared across folders</caption>'
        "<tr><th>folders</th><th>groups</th><th>files</th></tr>"
        f"{rows}</table>"
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{background:#fff;padding:12px 20px;border-bottom:1px solid #ccc}
h1{font-size:20px;margin:0 0 4px}
.summary{margin:0 0 8px}
nav button{font:inherit;padding:2px 10px}
nav input[type=number]{width:5em;font:inherit}
.pairs{border-collapse:collapse;margin:6px 0}
.pairs td,.pairs th{border:1px solid #ccc;padding:2px 8px;text-align:left}
main{padding:12px 20px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0 0 14px;padding:10px}
section h2{font-size:15px;margin:0 0 8px}
.conflict{background:#fff3cd;border:1px solid #e0c060;padding:4px 8px;margin:0 0 8px}
.files{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:180px;border:2px solid #ddd;border-radius:4px;padding:6px}
figure.keep{border-color:#2a8a3a;background:#eef8ee}
figure.picked{outline:3px solid #2a6ad0}
figure img{display:block;max-width:128px;max-height:128px;margin:0 auto 4px;cursor:zoom-in}
.nothumb{height:64px;display:flex;align-items:center;justify-content:center;color:#888}
.badge{font-weight:600}
.keep .badge{color:#2a8a3a}
.path{overflow-wrap:break-word;font-size:12px}
.meta,.labels,.sidecars{font-size:12px;color:#555}
.actions{margin-top:4px;font-size:12px}
.actions button{font:inherit;padding:0 6px}
#viewer{position:fixed;inset:0;background:#1b1b1b;color:#eee;padding:16px;z-index:10;
 display:flex;flex-direction:column;gap:8px}
#viewer[hidden]{display:none}
#viewer .bar{display:flex;justify-content:space-between;align-items:center}
#viewer .bar button{font:inherit;padding:2px 12px}
.panes{display:flex;gap:16px;flex:1;min-height:0}
.pane{flex:1 1 0;min-width:0;display:flex;flex-direction:column;gap:4px}
.frame{flex:1;min-height:0;display:flex;align-items:center;justify-content:center;
 background:#111;border-radius:4px}
.frame img{width:100%;height:100%;object-fit:contain;display:block}
.pane .meta,.pane .labels,.pane .sidecars,.pane .note{color:#ccc}
.pane .keep-badge{color:#7fd08a}
.note{font-size:12px;font-style:italic}
"""

_SCRIPT = """
"use strict";
const groups = JSON.parse(document.getElementById("data").textContent);
const pageSize = Number(document.body.dataset.pageSize);
const main = document.getElementById("groups");
const pageInput = document.getElementById("page");
const onlyConflicts = document.getElementById("conflicts");
const viewer = document.getElementById("viewer");
const panes = document.getElementById("panes");
let page = 1;

function shown() {
  return onlyConflicts.checked ? groups.filter(g => g.conflict) : groups;
}
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
// A path that may wrap after each "/", never inside a name.
function pathNode(path) {
  const node = el("div", "path");
  path.split("/").forEach((part, i, parts) => {
    node.append(document.createTextNode(i < parts.length - 1 ? part + "/" : part));
    if (i < parts.length - 1) node.append(el("wbr"));
  });
  return node;
}
function badge(file, pair) {
  if (file.kind === "keep") return "KEEP";
  const how = file.kind + ", distance " + file.distance + (pair ? " to the keeper" : "");
  return how + (file.transform ? ", " + file.transform : "");
}
function details(file, pair) {
  const kept = file.kind === "keep" ? " keep-badge" : "";
  const nodes = [el("div", "badge" + kept, badge(file, pair)), pathNode(file.path),
                 el("div", "meta", file.size + " \\u00b7 " + file.bytes)];
  if (file.labels !== null) nodes.push(el("div", "labels", "labels: " + file.labels));
  if (file.sidecars.length) {
    nodes.push(el("div", "sidecars", "label files: " + file.sidecars.join(", ")));
  }
  return nodes;
}
// The viewer: one picture in full, or two side by side in frames of the same size.
function pane(file, pair) {
  const node = el("div", "pane");
  const frame = el("div", "frame");
  const img = el("img");
  const note = el("div", "note");
  img.alt = file.path;
  img.onerror = () => {
    if (file.thumb && img.src !== file.thumb) {
      img.src = file.thumb;
      note.textContent = "the file cannot be opened from here (moved?): its thumbnail";
    }
  };
  img.src = file.url;
  frame.append(img);
  node.append(frame, ...details(file, pair), note);
  return node;
}
function openViewer(files) {
  panes.replaceChildren(...files.map(f => pane(f, files.length > 1)));
  document.getElementById("viewer-title").textContent =
    files.length > 1 ? "side by side" : files[0].path.split("/").pop();
  viewer.hidden = false;
  document.getElementById("close").focus();
}
function closeViewer() {
  viewer.hidden = true;
  panes.replaceChildren();
}
function figure(group, file, picked) {
  const fig = el("figure", file.kind === "keep" ? "keep" : "");
  if (file.thumb) {
    const img = el("img");
    img.src = file.thumb;
    img.alt = file.path;
    img.title = "open in full";
    img.decoding = "async";
    img.onclick = () => openViewer([file]);
    fig.append(img);
  } else {
    fig.append(el("div", "nothumb", "no preview"));
  }
  fig.append(...details(file, false));
  const actions = el("div", "actions");
  if (file.kind !== "keep") {
    const both = el("button", "beside", "beside the keeper");
    both.type = "button";
    both.onclick = () => openViewer([group.files[0], file]);
    actions.append(both, " ");
  }
  const pick = el("button", "pick", "compare\\u2026");
  pick.type = "button";
  pick.title = "pick two pictures of the group to see them side by side";
  pick.onclick = () => {
    if (picked.length && picked[0].file === file) return;
    picked.push({file, fig});
    fig.classList.add("picked");
    if (picked.length === 2) {
      const [a, b] = picked.splice(0);
      a.fig.classList.remove("picked");
      b.fig.classList.remove("picked");
      openViewer([a.file, b.file]);
    }
  };
  actions.append(pick);
  fig.append(actions);
  return fig;
}
function section(group) {
  const sec = el("section");
  sec.id = "group-" + group.n;
  sec.append(el("h2", "", "Group " + group.n + " \\u00b7 " + group.files.length + " files"));
  if (group.conflict) sec.append(el("div", "conflict", group.conflict));
  const files = el("div", "files");
  const picked = [];
  group.files.forEach(f => files.append(figure(group, f, picked)));
  sec.append(files);
  return sec;
}
function render() {
  const list = shown();
  const pages = Math.max(1, Math.ceil(list.length / pageSize));
  page = Math.min(Math.max(1, page), pages);
  pageInput.value = page;
  pageInput.max = pages;
  document.getElementById("pages").textContent = "of " + pages;
  main.replaceChildren(...list.slice((page - 1) * pageSize, page * pageSize).map(section));
  window.scrollTo(0, 0);
}
document.getElementById("prev").onclick = () => { page -= 1; render(); };
document.getElementById("next").onclick = () => { page += 1; render(); };
pageInput.onchange = () => { page = Number(pageInput.value) || 1; render(); };
onlyConflicts.onchange = () => { page = 1; render(); };
document.getElementById("close").onclick = closeViewer;
viewer.onclick = event => { if (event.target === viewer || event.target === panes) closeViewer(); };
document.addEventListener("keydown", event => {
  if (event.key === "Escape" && !viewer.hidden) closeViewer();
});
render();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: file:; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
<body data-page-size="{page_size}">
<header>
<h1>{title}</h1>
<p class="summary" id="summary">{summary}</p>
{pairs}
<nav><button id="prev" type="button">&larr; previous</button>
page <input id="page" type="number" min="1" value="1"> <span id="pages"></span>
<button id="next" type="button">next &rarr;</button>
<label><input id="conflicts" type="checkbox"> only groups whose labels differ</label></nav>
</header>
<main id="groups"><noscript>This report pages its groups with a few lines of script; \
allow JavaScript for this file to see them.</noscript></main>
<div id="viewer" role="dialog" aria-modal="true" aria-labelledby="viewer-title" hidden>
<div class="bar"><span id="viewer-title"></span>\
<button id="close" type="button">close (Esc)</button></div>
<div class="panes" id="panes"></div>
</div>
<script type="application/json" id="data">{payload}</script>
<script>{script}</script>
</body>
</html>
"""


def report_summary_line(summary: ReportSummary) -> str:
    line = (
        f"dupwatch: {summary.groups} groups, {summary.files} files; dedupe would free "
        f"{human_size(summary.freed_bytes)}"
    )
    if summary.label_conflicts:
        line += f"; {_count(summary.label_conflicts, 'group')} whose labels differ"
    return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
