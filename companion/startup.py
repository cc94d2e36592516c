"""``python -m companion.startup``: how long a chapter waits for its first useful line.

Each probe runs in a fresh Python process and times one statement inside it
(``import jax``, ``from companion import mlp``, ``load_mnist()``). *Warm* runs find
every file in the operating system's page cache, as on a machine in use; *cold* runs
first evict from that cache every file the probe touches — the modules and shared
libraries it loaded (read from ``sys.modules`` and ``/proc/self/maps``) and the MNIST
files — with ``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no root, so each cold
run reads them from disk again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PROBES", "Probe", "Startup", "evict", "format_table", "main", "measure"]


@dataclass(frozen=True)
class Probe:
    """A statement to time in a fresh process, after an untimed ``setup``."""

    name: str
    statement: str
    setup: str = ""


PROBES = (
    Probe("import jax", "import jax"),
    Probe("from companion import mlp", "from companion import mlp"),
    Probe(
        "load_mnist()", "load_mnist()", setup="from companion.data import load_mnist"
    ),
)

# Runs in the child: times the statement, then reports the seconds and files it touched.
_CHILD = """
import json, os, sys, time
{setup}
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
files = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f:
        files.add(f)
        if f.endswith(".py"):
            import importlib.util
            files.add(importlib.util.cache_from_source(f))
if os.path.exists("/proc/self/maps"):
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith("/"):
            files.add(parts[5])
try:
    from companion.data import raw_files
    files.update(str(p) for p in raw_files())
except Exception:
    pass  # no MNIST here: nothing of it to evict
print(json.dumps({{"seconds": seconds, "files": sorted(files)}}))
"""


def _run(probe: Probe) -> tuple[float, list[str]]:
    code = _CHILD.format(setup=probe.setup, statement=probe.statement)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"probe {probe.name!r} failed:\n{out.stderr.strip()}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), list(result["files"])


def evict(paths: Sequence[str]) -> int:
    """Drop ``paths`` from the OS page cache; returns how many files were evicted."""
    done = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone, or not readable: nothing to evict
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            done += 1
        finally:
            os.close(fd)
    return done


@dataclass(frozen=True)
class Startup:
    """Cold and warm seconds of one probe (medians), with the runs behind them."""

    name: str
    # median seconds with the probe's files evicted from the page cache first
    cold: float
    warm: float  # median seconds with every file cached
    cold_runs: tuple[float, ...]
    warm_runs: tuple[float, ...]


def measure(
    probes: Sequence[Probe] = PROBES, *, cold: int = 2, warm: int = 3
) -> list[Startup]:
    """Time each probe ``cold`` times cold and ``warm`` times warm.

    First, one untimed run of all the probes together, a warm-up that finds every file
    they touch. Before each cold run all of those files are evicted; the warm runs of a
    probe follow its cold runs, which read its files back into the cache.
    """
    if cold < 1 or warm < 1:
        raise ValueError(
            f"cold and warm must be at least 1; got cold={cold}, warm={warm}"
        )
    if not hasattr(os, "posix_fadvise"):  # pragma: no cover - macOS, Windows
        raise OSError(
            "cold runs need os.posix_fadvise (Linux) to evict files from the page cache"
        )
    # one untimed run of every probe's statements together: it fills the page
    # cache, and says which files the probes touch (their union is evicted before
    # each cold run)
    together = Probe(
        "all probes",
        "\n".join(p.statement for p in probes),
        setup="\n".join(p.setup for p in probes if p.setup),
    )
    _, files = _run(together)
    rows = []
    for probe in probes:
        cold_runs = []
        for _ in range(cold):
            evict(files)
            cold_runs.append(_run(probe)[0])
        warm_runs = [_run(probe)[0] for _ in range(warm)]  # the cold run cached them
        rows.append(
            Startup(
                probe.name,
                statistics.median(cold_runs),
                statistics.median(warm_runs),
                tuple(cold_runs),
                tuple(warm_runs),
            )
        )
    return rows


def format_table(rows: Sequence[Startup]) -> str:
    """The start-up table as text: cold and warm medians, with each row's spread."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'seconds':{width}s}  {'cold':>6s}  {'warm':>6s}   warm runs"]
    for r in rows:
        spread = ", ".join(f"{t:.3f}" for t in r.warm_runs)
        lines.append(f"{r.name:{width}s}  {r.cold:6.3f}  {r.warm:6.3f}   {spread}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m companion.startup",
        description="Seconds to import jax, to import companion.mlp and to load MNIST, "
        "each in a fresh process, cold (files evicted from the page cache) and warm.",
    )
    parser.add_argument(
        "--cold", type=int, default=2, help="cold runs per probe (median; default 2)"
    )
    parser.add_argument(
        "--warm", type=int, default=3, help="warm runs per probe (median; default 3)"
    )
    args = parser.parse_args(argv)
    if args.cold < 1 or args.warm < 1:
        parser.error("--cold and --warm must be at least 1")
    rows = measure(PROBES, cold=args.cold, warm=args.warm)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
