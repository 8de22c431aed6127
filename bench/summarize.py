#!/usr/bin/env python3
"""Medians and spreads of bench/run.sh's JSON lines, as Markdown tables (std-only).

    python3 bench/summarize.py bench/results/COMMIT/results.jsonl > summary.md

Each cell is "median (min-max)" over the rounds; the ratio column compares popstate with the
limit probe measured in the same rounds (throughput: % of the probe; latency and memory: x).
"""

import json
import re
import statistics
import sys
from collections import defaultdict

TARGETS = ["popstate", "probe", "dovecot"]
# (mode, parameter that splits the rows, metric, higher is better)
METRICS = [
    ("latency", None, "p50_us", False),
    ("latency", None, "p99_us", False),
    ("retr", "user", "mb_per_s", True),
    ("sessions", "clients", "sessions_per_s", True),
    ("sessions", "clients", "session_p50_ms", False),
    ("sessions", "clients", "session_p99_ms", False),
    ("sessions", "clients", "client_cpu_cores", False),
    ("idle", "wanted", "established", True),
    ("idle", "wanted", "alive_after_hold", True),
    ("idle", "wanted", "pss_per_session_kib", False),
    ("idle", "wanted", "kernel_per_session_kib", False),
    ("idle", "wanted", "logins_per_s", True),
    ("login", "user", "first_ms", False),
    ("login", "user", "cold_p50_ms", False),
    ("login", "user", "warm_p50_ms", False),
]


def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(values):
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
    data = defaultdict(list)
    errors = defaultdict(int)
    for r in rows:
        phase = re.sub(r"\d+$", "", r.get("round", ""))
        for mode, param, metric, _ in METRICS:
            if r["mode"] != mode or r.get(metric) is None:
                continue
            key = (phase, mode, str(r.get(param, "")) if param else "", metric)
            data[key, r["label"]].append(r[metric])
        for kind, n in (r.get("errors") or {}).items():
            errors[(r["label"], r["mode"], phase, kind)] += n

    print("| phase | measure | " + " | ".join(TARGETS) + " | popstate vs probe |")
    print("|---|---|" + "---|" * len(TARGETS) + "---|")
    keys = sorted({k for (k, _) in data}, key=lambda k: (k[0], k[1], k[3], k[2].rjust(8)))
    for key in keys:
        phase, mode, param, metric = key
        higher = next(h for m, _, met, h in METRICS if m == mode and met == metric)
        cells = [cell(data.get((key, t), [])) for t in TARGETS]
        ratio = "–"
        ours, probe = data.get((key, "popstate")), data.get((key, "probe"))
        if ours and probe and statistics.median(probe) and metric not in ("established", "alive_after_hold"):
            q = statistics.median(ours) / statistics.median(probe)
            ratio = f"{q * 100:.0f}%" if higher else f"{q:.2f}x"
        label = f"{mode} {param} {metric}".replace("  ", " ")
        print(f"| {phase} | {label} | " + " | ".join(cells) + f" | {ratio} |")
    if errors:
        print("\nErrors (summed over rounds):\n")
        for (label, mode, phase, kind), n in sorted(errors.items()):
            print(f"- {label} {phase} {mode}: {kind} × {n}")
    else:
        print("\nNo errors in any run.")


if __name__ == "__main__":
    main()
