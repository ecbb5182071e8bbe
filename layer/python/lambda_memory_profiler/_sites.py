"""Allocation sites: which frame of a traceback is the function's own code, and a snapshot's
traced blocks grouped by that site.

A site is the newest frame outside library code (the standard library, installed packages,
the Lambda runtime client, layers, and packages installed into the function's own folder); a
leak through ``json.loads`` is then named by the handler's line, not by ``json/decoder.py``.
When no frame is the function's own, the site is the newest frame.
"""

from __future__ import annotations

import csv
import os
import sys
import tracemalloc
from collections.abc import Iterable
from typing import Any, Optional

from . import _probes

# A frame as tracemalloc stores it: (filename, line number).
Frame = tuple[str, int]
# Traces are grouped by (site, allocating frame); the second is None when they are the same.
_Key = tuple[Frame, Optional[Frame]]

_UNKNOWN: _Key = (("<unknown>", 0), None)
# This package: its frames are never the function's, and blocks it allocates are the
# measurement's own.
PACKAGE_DIR = os.path.join(os.path.dirname(__file__), "")
_TRACEMALLOC_FILE = tracemalloc.__file__
# The gc callback and the block-count probe live there: their blocks replace older ones of
# the same kind (or are allocated after the count), so they are left out of the rows but are
# not part of the correction of the block count (see ``SiteTable.own_blocks``).
_PROBES_FILE = _probes.__file__
# Runtime and layer folders of Lambda: /var/runtime holds awslambdaric, /opt/python the
# layers (this package included). Frozen modules are the import machinery.
_FIXED_LIBRARIES = ("/var/runtime/", "/opt/python/", "<frozen ")

_prefixes: tuple[str, ...] | None = None


def _is_measurement(filename: str) -> bool:
    return filename.startswith(PACKAGE_DIR) or filename == _TRACEMALLOC_FILE


def _dir_prefix(path: str) -> str:
    return os.path.join(os.path.abspath(path), "")


def _installed_names(root: str) -> set[str]:
    """Top-level module names of the distributions installed into ``root`` (``pip install
    -t``): from each ``*.dist-info``'s ``top_level.txt``, else (absent or empty) from the
    Python files its ``RECORD`` lists. Unreadable metadata is skipped: those files then
    count as the user's."""
    names: set[str] = set()
    try:
        entries = [e for e in os.listdir(root) if e.endswith(".dist-info")]
    except OSError:
        return names
    for entry in entries:
        meta = os.path.join(root, entry)
        try:
            with open(os.path.join(meta, "top_level.txt"), encoding="utf-8") as f:
                listed = {n.strip().strip("/") for n in f if n.strip()}
        except (OSError, ValueError):
            listed = set()
        if listed:
            names |= listed
            continue
        try:
            with open(os.path.join(meta, "RECORD"), encoding="utf-8", newline="") as f:
                for row in csv.reader(f):
                    path = row[0].replace("\\", "/") if row else ""
                    # Only Python files can be frames; scripts (bin/...), data (../) and
                    # compiled caches would name folders that are not packages.
                    if not path.endswith(".py") or path.startswith(("../", "/")):
                        continue
                    head = path.split("/", 1)[0]
                    if head.endswith(".py"):
                        head = head[:-3]
                    if head and head != "__pycache__":
                        names.add(head)
        except (OSError, ValueError, csv.Error):
            pass
    return names


def library_prefixes() -> tuple[str, ...]:
    """Path prefixes of code that is not the function's own, computed once per process (at
    the first traced invocation, when the handler's module and its imports are loaded)."""
    global _prefixes
    if _prefixes is not None:
        return _prefixes
    import sysconfig

    found = set(_FIXED_LIBRARIES)
    found.add(PACKAGE_DIR)
    paths = sysconfig.get_paths()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(name):
            found.add(_dir_prefix(paths[name]))
    entries = [p or os.curdir for p in sys.path if isinstance(p, str)]
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root:
        entries.append(task_root)
    # Debian's dist-packages and the user's site-packages are not all in sysconfig's paths.
    for entry in entries:
        if os.path.basename(os.path.normpath(entry)) in ("site-packages", "dist-packages"):
            found.add(_dir_prefix(entry))
    # A symlinked interpreter or layer: frames carry the path the module was imported by.
    found.update([_dir_prefix(os.path.realpath(p)) for p in found if p.startswith("/")])
    covered = tuple(found)
    for entry in dict.fromkeys(entries):
        root = _dir_prefix(entry)
        if root.startswith(covered) or not os.path.isdir(root):
            continue
        # Import gives modules absolute paths (a relative entry included), as frames show.
        for name in _installed_names(root):
            found.add(root + name + os.sep)
            found.add(root + name + ".py")
    _prefixes = tuple(sorted(found))
    return _prefixes


def site_of(frames: tuple[Frame, ...]) -> _Key:
    """(site, allocating frame) of one traceback, most recent frame first; the second is None
    when the site is the allocating frame itself."""
    if not frames:
        return _UNKNOWN
    newest = frames[0]
    if len(frames) == 1 or _is_measurement(newest[0]):
        return (newest, None)
    libs = library_prefixes()
    for frame in frames:
        if not frame[0].startswith(libs):
            return (frame, None if frame is newest else newest)
    return (newest, None)


class SiteTable:
    """Traced blocks of one snapshot grouped by allocation site."""

    __slots__ = ("_acc", "own_blocks", "retained_bytes", "retained_blocks")

    def __init__(self, acc: dict[_Key, list[int]]) -> None:
        own = 0
        size = 0
        count = 0
        # The measurement's rows leave the table here, so nothing else has to skip them.
        for key in [k for k in acc if _is_measurement(k[0][0])]:
            if key[0][0] != _PROBES_FILE and key[0][0] != _TRACEMALLOC_FILE:
                own += acc[key][1]
            del acc[key]
        for e in acc.values():
            size += e[0]
            count += e[1]
        self._acc = acc
        # Live blocks of the measurement itself allocated while it ran (clock readings, the
        # decorator's frames): they are in the block count but are not the handler's.
        self.own_blocks = own
        # Everything traced and still live, the return value included (gross retention).
        self.retained_bytes = size
        self.retained_blocks = count

    @classmethod
    def from_snapshot(cls, snapshot: Any) -> SiteTable:
        try:
            # (domain, size, frames, ...) per trace: no object per trace.
            return cls(_group(snapshot.traces._traces))
        except Exception:  # the private layout changed: the public, slower way
            return cls.from_statistics(snapshot.statistics("traceback"))

    @classmethod
    def from_statistics(cls, stats: Iterable[Any]) -> SiteTable:
        acc: dict[_Key, list[int]] = {}
        for st in stats:
            # The public Traceback lists the oldest frame first; sites want the newest first.
            frames = tuple((f.filename, f.lineno) for f in reversed(st.traceback))
            e = acc.setdefault(site_of(frames), [0, 0])
            e[0] += st.size
            e[1] += st.count
        return cls(acc)

    def subtract(self, blocks: dict[tuple[Frame, ...], list[int]]) -> None:
        """Removes blocks (bytes, count per traceback) from the rows of their sites: what the
        invocation returned is live at its end, but the runtime frees it right after."""
        acc = self._acc
        left: dict[Frame, list[int]] = {}
        for frames, (size, count) in blocks.items():
            key = site_of(frames)
            e = acc.get(key)
            if e is not None:
                size, count = _take(e, size, count)
            if size > 0 or count > 0:
                rest = left.setdefault(key[0], [0, 0])
                rest[0] += size
                rest[1] += count
        if not left:
            return
        # What the exact (site, allocating frame) row could not absorb comes off the site's
        # other rows: the response's list arrays and dict tables are attributed to their
        # container's traceback, which may be a sibling line of the same site.
        for key, e in acc.items():
            rest = left.get(key[0])
            if rest is not None and (rest[0] > 0 or rest[1] > 0):
                rest[0], rest[1] = _take(e, rest[0], rest[1])

    def top(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` sites holding the most bytes, as ``trace.top`` entries: ``via`` names the
        allocating frame (of the site's largest share) when it is not the site itself."""
        merged: dict[Frame, list[Any]] = {}
        for (site, via), (size, count) in self._acc.items():
            if size <= 0 or count <= 0:
                continue
            m = merged.get(site)
            if m is None:
                merged[site] = [size, count, via, size]
            else:
                m[0] += size
                m[1] += count
                if size > m[3]:
                    m[2], m[3] = via, size
        best = sorted(merged.items(), key=lambda kv: (kv[1][0], kv[1][1]), reverse=True)[:n]
        out: list[dict[str, Any]] = []
        for (filename, lineno), (size, count, via, _largest) in best:
            entry: dict[str, Any] = {"file": filename, "line": lineno, "size": size, "count": count}
            if via is not None:
                entry["via"] = f"{via[0]}:{via[1]}"
            out.append(entry)
        return out


def _take(e: list[int], size: int, count: int) -> tuple[int, int]:
    """Takes up to (size, count) off a row; returns what it could not take."""
    s = size if size < e[0] else e[0]
    c = count if count < e[1] else e[1]
    e[0] -= s
    e[1] -= c
    return size - s, count - c


def _group(raw: list[Any]) -> dict[_Key, list[int]]:
    """Bytes and blocks per (site, allocating frame). The snapshot shares one tuple between
    the traces of one traceback, so the site is found once per distinct traceback (by the
    tuple's identity: its hash would walk every frame at every trace)."""
    acc: dict[_Key, list[int]] = {}
    by_tb: dict[int, list[int]] = {}
    for t in raw:
        frames = t[2]
        e = by_tb.get(id(frames))
        if e is None:
            key = site_of(frames) if frames else _UNKNOWN
            e = acc.get(key)
            if e is None:
                e = acc[key] = [0, 0]
            by_tb[id(frames)] = e
        e[0] += t[1]
        e[1] += 1
    return acc
