"""Export one stored run to CSV in a fresh process and report its peak memory.

Used by ``bench/run.py`` so the export's peak RSS is not mixed up with the memory the
benchmark process itself holds. Prints one JSON object on stdout:

    {"rows": ..., "seconds": ..., "rss_before_mb": ..., "peak_rss_mb": ...}

``peak_rss_mb`` is ``getrusage(RUSAGE_SELF).ru_maxrss`` at the end: the absolute peak of
the whole process (interpreter, imports, store, export), nothing subtracted.

Start this script through a small intermediate process (``run.py`` uses ``/bin/sh -c``):
Linux keeps ``ru_maxrss`` across ``execve``, so a child spawned directly by a big process
starts with its parent's peak (measured here: a 400 MB parent gave a fresh child
``ru_maxrss`` of 410 MB). A child forked by ``sh`` starts from zero. ``vm_hwm_mb``
(``VmHWM``, the peak of this process image alone) is printed as a cross-check.
``rss_before_mb`` is the same figure read just before the export starts (after the
imports and opening the store), ``after_import_mb`` right after ``import kpi_store``,
and ``current_rss_*_mb`` the resident size (VmRSS) just before and after the export.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import resource
import sys
import time

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CODE = next(
    (pathlib.Path(b) for a, b in zip(sys.argv, sys.argv[1:], strict=False) if a == "--code"),
    _ROOT,
)
sys.path.insert(0, str(_CODE.resolve()))

_AT_START_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

from kpi_store import KPIStore  # noqa: E402

_AFTER_IMPORT_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_mb() -> float:
    # Linux reports ru_maxrss in kibibytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float:
    """A memory figure of /proc/self/status (VmRSS: now, VmHWM: this image's peak), in MB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _current_mb() -> float:
    return _status_mb("VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--execution", type=int, required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--code", default=None, help="folder holding the kpi_store to use")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with KPIStore(args.store_url) as store:
        before = _peak_mb()
        current_before = _current_mb()
        started = time.perf_counter()
        rows = store.export_csv(args.execution, args.dest, actor="bench")
        seconds = time.perf_counter() - started
        current_after = _current_mb()
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": seconds,
                "interpreter_mb": round(_AT_START_KB / 1024, 1),
                "after_import_mb": round(_AFTER_IMPORT_KB / 1024, 1),
                "rss_before_mb": round(before, 1),
                "current_rss_before_mb": round(current_before, 1),
                "current_rss_after_mb": round(current_after, 1),
                "peak_rss_mb": round(_peak_mb(), 1),
                "vm_hwm_mb": round(_status_mb("VmHWM"), 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
