#!/usr/bin/env python3
"""DuckDB side of the query benchmark.

Reads the JSON written by `cargo bench -p flowlake-query --bench questions -- run`
(the views' SQL, each question's SQL over the flow rows, Flowlake's timings and answer,
which with `--mode rollups` Flowlake computed from hourly rollups), creates the same
views in DuckDB over the same Parquet files (the data files of the Delta table), runs
the same SQL the same number of times, checks both engines give the same answer and
prints one table: p50 of each engine and the ratio Flowlake / DuckDB.

With `--rounds R --rerun CMD`, the engines alternate on a noisy machine: after DuckDB's
round, CMD runs Flowlake again (rewriting RESULTS.json), then DuckDB runs again, R rounds
in all; each engine's p50 is over all its runs of every round. Answers are compared on
the first round.

usage: duckdb_compare.py RESULTS.json TABLE_DIR [--runs N] [--threads N] [--markdown OUT]
                         [--rounds R --rerun CMD]
"""
import argparse
import datetime
import json
import re
import statistics
import subprocess
import time

import duckdb


# Agreement rules. Integers (counts, sums) must be equal and strings identical; other
# numbers agree to 1e-9 relative. Percentile columns (`*_pNN_us`) agree to 1e-5 relative:
# both engines compute percentile_cont as x[k] + (x[k+1] - x[k]) * w with k = floor(q(n-1)),
# but DataFusion truncates the weight w to 1e-6 steps, so its value may sit up to
# (x[k+1] - x[k]) * 1e-6 below DuckDB's (seen: ~1.3e-6 relative on heavy-tailed DNS p99s).
EXACT_REL = 1e-9
PERCENTILE_REL = 1e-5
PERCENTILE_COLUMN = re.compile(r"_p[0-9]+_us$")


def compare(a, b, percentile_rel=PERCENTILE_REL):
    """(agree, max relative difference of non-integer numbers, first disagreement)."""
    if len(a) != len(b):
        return False, 0.0, f"{len(a)} rows vs {len(b)}"
    worst = 0.0
    for i, (ra, rb) in enumerate(zip(a, b)):
        if set(ra) - set(rb):
            return False, worst, f"row {i}: columns {sorted(set(ra) - set(rb))} missing"
        for k, vb in rb.items():
            va = ra.get(k)  # Arrow's JSON writer leaves out nulls
            if isinstance(vb, datetime.datetime) and isinstance(va, str):
                # Arrow writes timestamps as RFC 3339 text, DuckDB returns datetimes.
                va = datetime.datetime.fromisoformat(va)
                if va.tzinfo is None:
                    va = va.replace(tzinfo=datetime.timezone.utc)
                if vb.tzinfo is None:
                    vb = vb.replace(tzinfo=datetime.timezone.utc)
                if va != vb:
                    return False, worst, f"row {i} {k}: {va} vs {vb}"
                continue
            if va is None or vb is None:
                if va is not vb:
                    return False, worst, f"row {i} {k}: {va!r} vs {vb!r}"
                continue
            if isinstance(va, int) and isinstance(vb, int):
                if va != vb:
                    return False, worst, f"row {i} {k}: {va} vs {vb}"
            elif isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                rel = abs(va - vb) / max(abs(va), abs(vb), 1e-300)
                worst = max(worst, rel)
                tol = percentile_rel if PERCENTILE_COLUMN.search(k) else EXACT_REL
                if rel > tol:
                    return False, worst, f"row {i} {k}: {va} vs {vb} (rel {rel:.1e})"
            elif str(va) != str(vb):
                return False, worst, f"row {i} {k}: {va!r} vs {vb!r}"
    return True, worst, ""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("table")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--markdown", default=None)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--rerun", default=None,
                   help="shell command that runs Flowlake again and rewrites RESULTS")
    a = p.parse_args()
    if a.rounds > 1 and not a.rerun:
        raise SystemExit("--rounds needs --rerun")
    doc = json.load(open(a.results))
    con = duckdb.connect()
    threads = a.threads or doc["target_partitions"]
    con.execute(f"SET threads = {threads}")
    files = f"{a.table}/date=*/hour=*/*.parquet"
    con.execute(
        f"CREATE VIEW flows AS SELECT * FROM read_parquet('{files}', "
        "hive_partitioning = true, hive_types_autocast = false)"
    )
    # DuckDB's name for DataFusion's date_bin (the Grafana datasource's buckets).
    con.execute("CREATE MACRO date_bin(i, t, o) AS time_bucket(i, t, o::TIMESTAMPTZ)")
    for v in doc["views"]:
        con.execute(f"CREATE VIEW {v['name']} AS {v['sql']}")

    # Each engine's runs over every round, by question; DuckDB's answers of round 1.
    flowlake_ms = {q["name"]: list(q["flowlake_ms"]) for q in doc["queries"]}
    duckdb_ms = {q["name"]: [] for q in doc["queries"]}
    answers = {}
    for round_ in range(a.rounds):
        if round_ > 0:
            subprocess.run(a.rerun, shell=True, check=True)
            for q in json.load(open(a.results))["queries"]:
                flowlake_ms[q["name"]].extend(q["flowlake_ms"])
        for q in doc["queries"]:
            cur = con.execute(q["sql"])  # warm-up, and the answer
            cols = [d[0] for d in cur.description]
            rows_ = [dict(zip(cols, r)) for r in cur.fetchall()]
            answers.setdefault(q["name"], rows_)
            for _ in range(a.runs):
                t = time.perf_counter()
                con.execute(q["sql"]).fetchall()
                duckdb_ms[q["name"]].append((time.perf_counter() - t) * 1000)

    rows = []
    for q in doc["queries"]:
        answer = answers[q["name"]]
        fl = statistics.median(flowlake_ms[q["name"]])
        dk = statistics.median(duckdb_ms[q["name"]])
        flowlake = q["flowlake_result"]
        rel = PERCENTILE_REL
        if q.get("approx_rel"):
            # Quantiles from rollup sketches: within their relative accuracy, and rows
            # ranked by a quantile may swap places within it, so match rows by subject.
            rel = max(rel, q["approx_rel"])
            subject = lambda r: tuple(str(v) for k, v in sorted(r.items()) if isinstance(v, str))
            flowlake = sorted(flowlake, key=subject)
            answer = sorted(answer, key=subject)
        ok, worst, why = compare(flowlake, answer, rel)
        if not ok:
            print(f"{q['name']}: answers differ: {why}")
        rows.append((q["name"], fl, dk, fl / dk, ok, worst, len(answer)))

    head = (f"| question {a.label} | Flowlake p50 ms | DuckDB p50 ms | Flowlake/DuckDB "
            "| answers agree (rows, max rel. diff) |")
    lines = [head, "|---|---:|---:|---:|---|"]
    for name, fl, dk, ratio, ok, worst, n in rows:
        lines.append(f"| {name} | {fl:.0f} | {dk:.0f} | {ratio:.2f} "
                     f"| {'yes' if ok else 'NO'} ({n}, {worst:.0e}) |")
    groups = [("sum of the questions", lambda n: not n.startswith("adhoc/")),
              ("sum of the ad-hoc set", lambda n: n.startswith("adhoc/"))]
    for label, member in groups:
        part = [r for r in rows if member(r[0])]
        if part:
            total_fl = sum(r[1] for r in part)
            total_dk = sum(r[2] for r in part)
            lines.append(f"| **{label}** | {total_fl:.0f} | {total_dk:.0f} "
                         f"| {total_fl / total_dk:.2f} | |")
    text = "\n".join(lines)
    print(f"pod {doc['pod']}, range [{doc['from']}, {doc['to']}), {threads} threads, "
          f"duckdb {duckdb.__version__}, {a.rounds} round(s) of {a.runs} runs each")
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text + "\n")
    if not all(r[4] for r in rows):
        raise SystemExit("the engines disagree (see above)")


if __name__ == "__main__":
    main()
