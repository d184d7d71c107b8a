"""Benchmark of CDC on the embedded defaults (SQLite source/target, embedded log).

Prints, measured in one run on this machine:
- snapshot throughput (rows/s) of N product rows through capture → log → sink → target, as a
  ratio against a raw batched insert of the same mapped rows into the same kind of target;
- streaming lag from commit to visible in the target, p50/p99, at a steady write rate;
- peak RSS of the capture and sink worker processes during the snapshot.

    .venv/bin/python bench/cdc_embedded.py --rows 1000000
    .venv/bin/python bench/cdc_embedded.py --rows 50000 --rate 500 --seconds 10
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _procs import ROOT, peak_rss_mb, stop_processes  # also puts ROOT on sys.path for tests.*

from cdc.capture.sqlite import enable_capture, request_snapshot
from cdc.mapping import load_mapping
from kitcore.db import make_engine
from tests.unit.cdc.synthetic import (
    SOURCE_DDL,
    TARGET_DDL,
    write_mapping,
)

CHUNK = 20_000


def _sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def make_source(path: Path, rows: int) -> None:
    conn = _sqlite(path)
    for ddl in SOURCE_DDL:
        conn.execute(ddl)
    ts = "2024-01-02 03:04:05.000000"
    for start in range(1, rows + 1, CHUNK):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO products VALUES (?, ?, ?, ?, 'EUR', 1, ?, ?)",
            (
                (i, f"SKU-{i}", f"Oak Bench {i}", 1000 + i % 5000, ts, ts)
                for i in range(start, min(start + CHUNK, rows + 1))
            ),
        )
        conn.execute("COMMIT")
    conn.close()


def make_target(path: Path) -> None:
    conn = _sqlite(path)
    for ddl in TARGET_DDL:
        conn.execute(ddl)
    conn.close()


def raw_insert(source: Path, target: Path, mapping_path: Path, compiled: bool = True) -> float:
    """Baseline: read source rows, map them, batched INSERT into a fresh target; seconds."""
    tm = load_mapping(mapping_path).for_source("products")
    if compiled:
        forward = tm.compile_forward()
    else:  # the baseline before the compiled mapping existed: forward() per row

        def forward(row: dict) -> list:
            mapped = tm.forward(row)
            return [mapped[c] for c in cols]

    src, tgt = _sqlite(source), _sqlite(target)
    cols = [c.target for c in tm.columns]
    sql = f"INSERT INTO {tm.target} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    names = [d[1] for d in src.execute("PRAGMA table_info(products)")]
    t0 = time.perf_counter()
    last = 0
    while True:
        rows = src.execute(
            "SELECT * FROM products WHERE id > ? ORDER BY id LIMIT ?", (last, CHUNK)
        ).fetchall()
        if not rows:
            break
        batch = []
        for r in rows:
            # The sink's own compiled mapping (values in `cols` order), so the ratio measures
            # the pipeline, not a mapping speed-up the baseline could have too.
            mapped = forward(dict(zip(names, r, strict=True)))
            batch.append(tuple(str(v) if hasattr(v, "as_tuple") else v for v in mapped))
        tgt.execute("BEGIN")
        tgt.executemany(sql, batch)
        tgt.execute("COMMIT")
        last = rows[-1][0]
    elapsed = time.perf_counter() - t0
    src.close()
    tgt.close()
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (to tell CPU-bound from waiting)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, IndexError, ValueError):
        return 0.0


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kit.commands.cdc", "run", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path, timeout=60)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def applied_events(path: Path) -> int:
    """Events the sink has committed (its offsets live in the target): a cheap progress probe.

    count(*) walks the whole table; polling it several times a second would steal CPU from the
    workers being measured. The stop condition still confirms with count(*).
    """
    conn = sqlite3.connect(path, timeout=60)
    try:
        return conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM _cdc_sink_offsets"
        ).fetchone()[0]
    except sqlite3.OperationalError:  # the sink has not created its tables yet
        return 0
    finally:
        conn.close()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=500, help="streaming writes per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="streaming duration")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--batch", type=int, default=5000, help="events per worker batch")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="cdc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.dir is None:  # a 1M-row run leaves ~850 MB of databases and log behind
        atexit.register(shutil.rmtree, work, True)
    src, tgt, raw_tgt = work / "src.db", work / "tgt.db", work / "raw.db"
    old_raw_tgt = work / "raw_forward.db"
    for p in (src, tgt, raw_tgt, old_raw_tgt):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
    mapping_path = work / "mapping.toml"
    write_mapping(mapping_path)
    print(f"work dir {work}; rows {args.rows}")
    make_source(src, args.rows)
    make_target(tgt)
    make_target(raw_tgt)
    make_target(old_raw_tgt)

    raw_s = raw_insert(src, raw_tgt, mapping_path)
    old_raw_s = raw_insert(src, old_raw_tgt, mapping_path, compiled=False)
    raw_rate = args.rows / raw_s

    engine = make_engine(f"sqlite:///{src}")
    enable_capture(engine, ["products", "customers"])
    request_snapshot(engine, ["products"])
    engine.dispose()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDC_SOURCE_URL": f"sqlite:///{src}",
        "CDC_TARGET_URL": f"sqlite:///{tgt}",
        "CDC_MAPPING": str(mapping_path),
        "CDC_LOG_DIR": str(work / "log"),
        "CDC_PARTITIONS": "4",
    }
    t0 = time.perf_counter()
    capture = spawn(env, "--no-sink", "--batch", str(args.batch))
    sink = spawn(env, "--no-capture", "--batch", str(args.batch))
    peaks = {"capture": 0.0, "sink": 0.0}
    try:
        while applied_events(tgt) < args.rows or count(tgt, "catalog_product") < args.rows:
            peaks["capture"] = max(peaks["capture"], peak_rss_mb(capture.pid))
            peaks["sink"] = max(peaks["sink"], peak_rss_mb(sink.pid))
            time.sleep(0.2)
        snap_s = time.perf_counter() - t0
        cpu = {"capture": cpu_seconds(capture.pid), "sink": cpu_seconds(sink.pid)}
        peaks["capture"] = max(peaks["capture"], peak_rss_mb(capture.pid))
        peaks["sink"] = max(peaks["sink"], peak_rss_mb(sink.pid))
        snap_rate = args.rows / snap_s

        # Streaming: inserts carry their commit time in created_at; a monitor sees them land.
        lags: list[float] = []
        stop = threading.Event()
        base = args.rows + 1_000_000

        def monitor() -> None:
            # Rows of different partitions become visible out of id order: track a low-water
            # mark below which every id was seen, plus the ids seen above it.
            conn = sqlite3.connect(tgt, timeout=60)
            low, seen = base, set()
            while not stop.is_set() or low < base + written[0]:
                rows = conn.execute(
                    "SELECT id, created_at FROM catalog_product WHERE id > ?", (low,)
                ).fetchall()
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                for rid, created in rows:
                    if rid in seen:
                        continue
                    seen.add(rid)
                    lags.append(
                        (now - dt.datetime.fromisoformat(str(created))).total_seconds() * 1000
                    )
                while low + 1 in seen:
                    low += 1
                    seen.discard(low)
                if stop.is_set() and time.perf_counter() - stopped[0] > 10:
                    break
                time.sleep(0.002)
            conn.close()

        written = [0]
        stopped = [float("inf")]
        mon = threading.Thread(target=monitor)
        mon.start()
        conn = _sqlite(src)
        interval = 1.0 / args.rate
        start = time.perf_counter()
        nxt = start
        while time.perf_counter() - start < args.seconds:
            rid = base + written[0] + 1
            stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
            conn.execute(
                "INSERT INTO products (id, sku, name, price_cents, created_at) VALUES (?, ?, 'S', 1, ?)",
                (rid, f"S{rid}", stamp),
            )
            written[0] += 1
            nxt += interval
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        achieved = written[0] / (time.perf_counter() - start)
        stopped[0] = time.perf_counter()
        stop.set()
        mon.join(timeout=60)
        conn.close()
    finally:
        stop_processes(capture, sink, timeout=30)

    print(f"raw batched insert      : {raw_rate:>10,.0f} rows/s ({raw_s:.1f} s)")
    print(f"CDC snapshot end to end : {snap_rate:>10,.0f} rows/s ({snap_s:.1f} s)")
    print(f"snapshot / raw ratio    : {snap_rate / raw_rate:>10.2f}   (target >= 0.5)")
    old_rate = args.rows / old_raw_s
    print(
        f"  (raw with per-row forward(), the earlier baseline: {old_rate:,.0f} rows/s, "
        f"ratio {snap_rate / old_rate:.2f})"
    )
    print(
        f"worker CPU in snapshot  : capture {cpu['capture']:.1f} s, sink {cpu['sink']:.1f} s "
        f"(raw baseline {raw_s:.1f} s wall)"
    )
    print(
        f"streaming               : {achieved:,.0f} writes/s for {args.seconds:.0f} s, "
        f"{len(lags)} rows seen"
    )
    print(
        f"lag p50 / p99           : {percentile(lags, 50):.0f} ms / {percentile(lags, 99):.0f} ms"
        "   (target p99 <= 250 ms)"
    )
    print(
        f"peak RSS capture / sink : {peaks['capture']:.0f} MB / {peaks['sink']:.0f} MB"
        "   (target <= 200 MB each)"
    )


if __name__ == "__main__":
    main()
