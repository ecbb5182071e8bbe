"""The handler's return value: the blocks of it that tracing saw allocated.

The runtime frees the response right after the invocation, so its blocks are live at the end
without being growth; they are taken out of the allocation sites (``SiteTable.subtract``).
"""

from __future__ import annotations

import itertools
import sys
import tracemalloc
from collections.abc import Iterable
from typing import Any, Callable, Optional

Frames = tuple[tuple[str, int], ...]
FramesOf = Callable[[Any], Optional[Frames]]

_CONTAINERS = (list, tuple, set, frozenset)
_EMPTY_LIST = sys.getsizeof([])
_EMPTY_DICT = sys.getsizeof({})
_KEYS_FREE_LIST = 80  # CPython keeps at most this many small dict key tables for reuse
# Children looked at to place a new block of a container that tracing did not see allocated.
_PLACE_FROM = 8


def _public_frames_of(obj: Any) -> Frames | None:
    tb = tracemalloc.get_object_traceback(obj)
    if tb is None:
        return None
    # The public Traceback lists the oldest frame first; snapshots store the newest first.
    return tuple((f.filename, f.lineno) for f in reversed(tb))


# The raw form is the one snapshots hold (newest frame first), without a Traceback object.
frames_of: FramesOf = getattr(tracemalloc, "_get_object_traceback", None) or _public_frames_of


def walk_limit(traced_blocks: int) -> int:
    """Objects of the return value walked at most: as many as twice the blocks the invocation
    allocated and kept, so a response built of many objects is walked whole, at a cost in
    proportion to what tracing those allocations already cost; at least 2,048, at most 1,000,000."""
    return min(max(2048, 2 * traced_blocks), 1_000_000)


def result_blocks(
    result: Any, get_frames: FramesOf = frames_of, limit: int = 2048
) -> dict[Frames, list[int]]:
    """Bytes and blocks of the return value allocated while tracing, per traceback.

    Walks dicts, lists, tuples and sets (at most ``limit`` objects, see ``walk_limit``).
    Containers are entered even when their own header is older: the interpreter reuses list
    and dict headers from free lists, but their contents are new. A list's items array and a
    dict's key table are blocks without an object to ask about: they are placed at the
    container's traceback, else at a traced child's (where the container was filled). Never
    at an ancestor's: the response's blocks are taken off the sites they are placed at, and a
    wrong guess there would hide some of a real leak.
    """
    found: dict[Frames, list[int]] = {}
    seen = set()
    todo: list[Any] = [result]
    small_tables = 0
    while todo and len(seen) < limit:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        t = type(o)
        frames = get_frames(o)
        if t is dict:
            if frames is not None:
                _add(found, frames, _EMPTY_DICT)
            # Its key table is a new block, except small tables of str keys, which may come
            # from the interpreter's free list (up to 80 of them; no way to tell which). Those
            # are left in the sites: a few hundred bytes at worst, where counting them could
            # hide a real one-block leak.
            if len(o) > 5 or not all(type(k) is str for k in o):
                new_table = True
            else:
                small_tables += 1 if o else 0
                new_table = small_tables > _KEYS_FREE_LIST
            table = sys.getsizeof(o) - _EMPTY_DICT
            if new_table and table > 0:
                where = frames or _traced_child(itertools.chain(o.values(), o), get_frames)
                if where is not None:
                    _add(found, where, table)
            todo.extend(o.values())
            todo.extend(o)
        elif t is list:
            if frames is not None:
                _add(found, frames, _EMPTY_LIST)
            if o:  # the items array is allocated anew even for a reused list header
                where = frames or _traced_child(o, get_frames)
                if where is not None:
                    _add(found, where, sys.getsizeof(o) - _EMPTY_LIST)
            todo.extend(o)
        else:
            if frames is not None:
                _add(found, frames, sys.getsizeof(o))
            if t in _CONTAINERS:
                todo.extend(o)
    return found


def _add(found: dict[Frames, list[int]], frames: Frames, size: int) -> None:
    e = found.get(frames)
    if e is None:
        found[frames] = [size, 1]
    else:
        e[0] += size
        e[1] += 1


def _traced_child(children: Iterable[Any], get_frames: FramesOf) -> Frames | None:
    for child in itertools.islice(children, _PLACE_FROM):
        frames = get_frames(child)
        if frames is not None:
            return frames
    return None
