#!/usr/bin/env python3
"""Groups heaptrack_print's peak backtraces by portnode's own frame.

Usage: heaptrack_print -p 1 -n 200 -s 200 ... FILE | memory_sites.py N
For every backtrace of the peak, the innermost frame in portnode's sources
(rust/...) and the innermost frame outside the allocator and the standard
library (the allocating crate function) name the site; bytes and calls are
summed per site and divided by N, the number of programs held at the peak.
"""
import re
import sys

n = int(sys.argv[1])
UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3}  # heaptrack_print's units are decimal
ENTRY = re.compile(r"^\s*([0-9.]+)([KMG]?)B? consumed over (\d+) calls from:?$")
sites, entry, total = {}, None, 0
LIBRARY = re.compile(r"library/(alloc|std|core)/|^rust/|alloc/unix\.rs")


def short(path):
    """A crate's file as crate/path (tokio-1.54.1/src/x.rs: tokio/x.rs)."""
    return re.sub(r".*/([a-z_-]+)-[0-9][^/]*/src/", r"\1/", path)



def flush():
    if not entry:
        return
    size, calls, frames = entry
    mine = [i for i, (_, p) in enumerate(frames) if p.startswith("rust/")]
    ours = f"{frames[mine[0]][0]} ({frames[mine[0]][1]})" if mine else "(no portnode frame)"
    inner = frames[:mine[0]] if mine else frames
    via = next((f"{f} ({short(p)})" for f, p in inner if p and not LIBRARY.search(p)), "(directly)")
    s = sites.setdefault((ours, via), [0, 0])
    s[0] += size
    s[1] += calls


for line in sys.stdin:
    m = ENTRY.match(line)
    if m:
        flush()
        entry = (float(m.group(1)) * UNITS[m.group(2)], int(m.group(3)), [])
        total += entry[0]
        continue
    if entry is None:
        continue
    at = re.match(r"^\s+at (\S+?:\d+)", line)
    fn = re.match(r"^\s{4,}(\S.*?)\s*$", line)
    if at and entry[2]:
        entry[2][-1] = (entry[2][-1][0], at.group(1))
    elif fn and not line.strip().startswith("in ") and not at:
        entry[2].append((fn.group(1), ""))
flush()

print(f"| bytes per program | allocations per program | portnode frame | allocated by |\n|---|---|---|---|")
for (ours, via), (size, calls) in sorted(sites.items(), key=lambda kv: -kv[1][0]):
    if size / n >= 8:
        print(f"| {size / n:.0f} | {calls / n:.2f} | {ours} | {via} |")
print(f"| {total / n:.0f} | | everything live at the peak, the baseline included, / N | |")
