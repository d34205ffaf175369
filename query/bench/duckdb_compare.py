#!/usr/bin/env python3
"""DuckDB side of the query benchmark.

Reads the JSON written by `cargo bench -p flowlake-query --bench questions -- run`
(the views' SQL, each question's SQL, Flowlake's timings and answer), creates the same
views in DuckDB over the same Parquet files (the data files of the Delta table), runs
the same SQL the same number of times, checks both engines give the same answer and
prints one table: p50 of each engine and the ratio Flowlake / DuckDB.

usage: duckdb_compare.py RESULTS.json TABLE_DIR [--runs N] [--threads N] [--markdown OUT]
"""
import argparse
import json
import math
import statistics
import time

import duckdb


def same(a, b):
    """Both answers equal (numbers to 1e-6 relative, row order as returned)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        for k, va in ra.items():
            vb = rb.get(k)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                if not math.isclose(float(va), float(vb), rel_tol=1e-6, abs_tol=1e-9):
                    return False
            elif str(va) != str(vb):
                return False
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("table")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--markdown", default=None)
    a = p.parse_args()
    doc = json.load(open(a.results))
    con = duckdb.connect()
    threads = a.threads or doc["target_partitions"]
    con.execute(f"SET threads = {threads}")
    files = f"{a.table}/date=*/hour=*/*.parquet"
    con.execute(
        f"CREATE VIEW flows AS SELECT * FROM read_parquet('{files}', "
        "hive_partitioning = true, hive_types_autocast = false)"
    )
    for v in doc["views"]:
        con.execute(f"CREATE VIEW {v['name']} AS {v['sql']}")

    rows = []
    for q in doc["queries"]:
        cur = con.execute(q["sql"])  # warm-up, and the answer
        cols = [d[0] for d in cur.description]
        answer = [dict(zip(cols, r)) for r in cur.fetchall()]
        ms = []
        for _ in range(a.runs):
            t = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            ms.append((time.perf_counter() - t) * 1000)
        fl = statistics.median(q["flowlake_ms"])
        dk = statistics.median(ms)
        rows.append((q["name"], fl, dk, fl / dk, same(q["flowlake_result"], answer), len(answer)))

    head = f"| question {a.label} | Flowlake p50 ms | DuckDB p50 ms | Flowlake/DuckDB | same answer (rows) |"
    lines = [head, "|---|---:|---:|---:|---|"]
    for name, fl, dk, ratio, ok, n in rows:
        lines.append(f"| {name} | {fl:.0f} | {dk:.0f} | {ratio:.2f} | {'yes' if ok else 'NO'} ({n}) |")
    total_fl = sum(r[1] for r in rows)
    total_dk = sum(r[2] for r in rows)
    lines.append(f"| **sum** | {total_fl:.0f} | {total_dk:.0f} | {total_fl / total_dk:.2f} | |")
    text = "\n".join(lines)
    print(f"pod {doc['pod']}, range [{doc['from']}, {doc['to']}), {threads} threads, "
          f"duckdb {duckdb.__version__}")
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text + "\n")


if __name__ == "__main__":
    main()
