#!/usr/bin/env python3
"""Medians and spreads of bench/run.sh's JSON lines, as Markdown tables (std-only).

    python3 bench/summarize.py bench/results/COMMIT/results.jsonl > summary.md

Each cell is "median (min-max)" over the rounds. The ratio columns compare popstate with the
limit probe and with Dovecot measured in the same rounds: popstate ÷ other in each round, then
the median of those per-round ratios, with the per-round values after it (throughput: % of the
other; latency, memory and CPU: ×). Server CPU per session and per MB come from the
server_cpu_s that bench/run.sh adds for single-process servers.
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
    ("sessions", "clients", "cpu_ms_per_session", False),
    ("retr", "user", "cpu_ms_per_mb", False),
]

# loadgen's sessions mode counts sessions in a window that starts after its warm-up (1 s by
# default), while the server's CPU is read around the whole run; retr adds one untimed
# retrieval before its window.
WARMUP_S = 1.0


def derived(r):
    """CPU per unit of work, from the server's CPU seconds over the whole run."""
    cpu = r.get("server_cpu_s")
    if cpu is None:
        return {}
    if r["mode"] == "sessions" and r.get("sessions_per_s"):
        sessions = r["sessions_per_s"] * (r["seconds"] + WARMUP_S)
        return {"cpu_ms_per_session": cpu * 1000 / sessions}
    if r["mode"] == "retr" and r.get("count"):
        mb = r["octets"] * (r["count"] + 1) / 1e6
        return {"cpu_ms_per_mb": cpu * 1000 / mb}
    return {}


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


def per_round(ours, other, higher, metric):
    """Median of popstate ÷ other over the rounds both ran in, then each round's ratio."""
    if not ours or not other or metric in ("established", "alive_after_hold"):
        return "–"
    theirs = dict(other)
    qs = [v / theirs[n] for n, v in ours if theirs.get(n)]
    if not qs:
        return "–"
    show = (lambda q: f"{q * 100:.0f}%") if higher else (lambda q: f"{q:.2f}×")
    return f"**{show(statistics.median(qs))}** ({', '.join(show(q) for q in qs)})"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
    data = defaultdict(list)
    errors = defaultdict(int)
    for r in rows:
        r.update(derived(r))
        round_name = r.get("round", "")
        phase = re.sub(r"\d+$", "", round_name)
        number = round_name[len(phase):]
        for mode, param, metric, _ in METRICS:
            if r["mode"] != mode or r.get(metric) is None:
                continue
            key = (phase, mode, str(r.get(param, "")) if param else "", metric)
            data[key, r["label"]].append((number, r[metric]))
        for kind, n in (r.get("errors") or {}).items():
            errors[(r["label"], r["mode"], phase, kind)] += n

    print("| phase | measure | " + " | ".join(TARGETS) + " | popstate ÷ probe, per round | popstate ÷ Dovecot, per round |")
    print("|---|---|" + "---|" * len(TARGETS) + "---|---|")
    keys = sorted({k for (k, _) in data}, key=lambda k: (k[0], k[1], k[3], k[2].rjust(8)))
    for key in keys:
        phase, mode, param, metric = key
        higher = next(h for m, _, met, h in METRICS if m == mode and met == metric)
        cells = [cell([v for _, v in data.get((key, t), [])]) for t in TARGETS]
        ratios = [per_round(data.get((key, "popstate")), data.get((key, other)), higher, metric)
                  for other in ("probe", "dovecot")]
        label = f"{mode} {param} {metric}".replace("  ", " ")
        print(f"| {phase} | {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if errors:
        print("\nErrors (summed over rounds):\n")
        for (label, mode, phase, kind), n in sorted(errors.items()):
            print(f"- {label} {phase} {mode}: {kind} × {n}")
    else:
        print("\nNo errors in any run.")


if __name__ == "__main__":
    main()
