"""Checking COCO compressed RLE strings before anything decodes them, all at once with NumPy.

pycocotools (and the COCO evaluators built on it) decode a mask by writing each run into an
``h x w`` buffer without checking that the runs add up to ``h x w``: a string whose runs add up
to more writes past the buffer, and a negative run (stored as ``uint``) to far more. Masks
from outside Vario (a real dataset's annotations, a model's predictions) are therefore decoded
here first, as pycocotools' ``rleFrString`` reads them, and refused unless every run is
non-negative and the runs cover the image exactly. Vectorised, so a million masks take about
a second, not a Python loop each.

The string format (pycocotools ``maskApi.c``): each run is a signed number in groups of 5 bits,
least significant first, one character per group (``chr(48 + bits)``, bit 0x20 meaning "more
groups follow", bit 0x10 of the last group the sign); runs after the third are stored as the
difference to the run two before.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

MAX_GROUPS = 6  # 30 bits a run: more than any image Vario reads holds (pycocotools shifts ints)


CHUNK_CHARS = 1 << 15  # characters checked at once: the arrays stay in the CPU's cache


def check_counts(
    counts: pa.Array | pa.ChunkedArray, heights: np.ndarray, widths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each compressed counts string (no nulls), whether it is a valid RLE of a
    ``heights[i] x widths[i]`` mask, and its foreground pixel count (0 where invalid)."""
    if isinstance(counts, pa.ChunkedArray):
        counts = counts.combine_chunks()
    counts = counts.cast(pa.large_string())
    if counts.null_count:
        raise ValueError("check_counts: null counts")
    n = len(counts)
    heights, widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    offsets = np.frombuffer(counts.buffers()[1], np.int64)[counts.offset : counts.offset + n + 1]
    buffer = counts.buffers()[2]
    data = np.frombuffer(buffer, np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    ok, area = np.zeros(n, bool), np.zeros(n, np.int64)
    i = 0
    while i < n:  # whole strings, about CHUNK_CHARS characters at a time
        j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + CHUNK_CHARS, side="right")) - 1)
        j = min(j, n)
        ok[i:j], area[i:j] = _check(data, offsets[i : j + 1], heights[i:j] * widths[i:j])
        i = j
    return ok, area


def _check(
    data: np.ndarray, offsets: np.ndarray, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``_check`` of the strings ``data[offsets[k]:offsets[k + 1]]``."""
    n = offsets.size - 1
    ends = offsets[1:] - offsets[0]  # each string's end, in ``chars``
    chars = data[offsets[0] : offsets[-1]].astype(np.int16) - 48
    ok = ends > np.concatenate(([0], ends[:-1]))  # not empty
    area = np.zeros(n, np.int64)
    if not chars.size:
        return ok, area
    bad = (chars < 0) | (chars > 63)
    if bad.any():
        ok[np.searchsorted(ends, np.flatnonzero(bad), side="right")] = False
        chars[bad] = 0
    end = (chars & 0x20) == 0
    last = ends[ok] - 1
    ok[np.flatnonzero(ok)[~end[last]]] = False  # the string stops inside a run
    end[last] = True
    starts = np.flatnonzero(np.concatenate(([True], end[:-1])))
    del end, bad
    groups = np.diff(np.append(starts, chars.size))
    # each string's runs: [first[i], first[i + 1]) (no run spans two strings)
    first = np.searchsorted(starts, np.concatenate(([0], ends)), side="left")
    run_string = np.repeat(np.arange(n), np.diff(first))
    ok[run_string[groups > MAX_GROUPS]] = False
    groups = groups.clip(max=MAX_GROUPS)
    value = (chars[starts] & 0x1F).astype(np.int64)
    longer = np.flatnonzero(groups > 1)  # few: most runs fit one character
    for k in range(1, MAX_GROUPS):
        longer = longer[groups[longer] > k]
        value[longer] += (chars[starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = (chars[starts + groups - 1] & 0x10) != 0
    value[negative] -= np.int64(1) << (groups[negative] * 5)
    del chars, starts, groups, negative
    # run m >= 3 adds run m - 2: two chains, the odd runs and the even ones after the first
    own_first = first[run_string]
    m = np.arange(run_string.size) - own_first
    odd = (m & 1).astype(bool)
    runs = value
    for chain in (odd, ~odd & (m > 0)):
        summed = np.concatenate(([0], np.cumsum(np.where(chain, value, 0))))
        runs = np.where(chain, summed[1:] - summed[own_first], runs)
    ok[run_string[runs < 0]] = False
    total = _per_string(runs, first)
    area = _per_string(np.where(odd, runs, 0), first)
    ok &= total == pixels
    area[~ok] = 0
    return ok, area


def _per_string(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums of ``values`` over each string's runs (``first``: where each string's runs start)."""
    summed = np.concatenate(([0], np.cumsum(values)))
    return summed[first[1:]] - summed[first[:-1]]
