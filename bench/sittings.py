#!/usr/bin/env python3
"""The targets of the performance issue across several bench/run.sh sittings (std only).

    python3 bench/sittings.py bench/results/A/results.jsonl bench/results/B/results.jsonl

For each figure: popstate ÷ probe (or ÷ Dovecot, for the first login) in every round of every
sitting, each sitting's median, and the median over all rounds of all the sittings given. A
target counts as met when that median meets it and at least two sittings are given (the issue:
"in the median of at least two sittings on different hours"; the hours are the caller's to
choose, and every sitting of the code should be given, not a chosen few). The last column says
how many sittings met it on their own, so a verdict that rests on a thin margin shows as one.
"""

import json
import statistics
import sys
from collections import defaultdict

# (label, mode, parameter name, parameter value, metric, other server, target, higher is better)
FIGURES = [
    ("sessions/s, 16 clients", "sessions", "clients", 16, "sessions_per_s", "probe", 0.60, True),
    ("RETR of the 100 MB message, MB/s", "retr", "user", "big", "mb_per_s", "probe", 0.50, True),
    ("NOOP round trip p50", "latency", None, None, "p50_us", "probe", 1.15, False),
    ("PSS per idle session, 10,000 sessions", "idle", "wanted", 10000, "pss_per_session_kib", None, 20.0, False),
    ("idle sessions held of 10,000", "idle", "wanted", 10000, "alive_after_hold", None, 10000, True),
    ("first login on m100000 after a restart", "login", "user", "m100000", "first_ms", "dovecot", 3.0, False),
]


def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
    # Only the reference phases: core (sessions, retr, latency), idle and first.
    return [r for r in rows if r.get("round", "").rstrip("0123456789") in ("core", "idle", "first")]


def values(rows, label, mode, param, value, metric):
    out = {}
    for r in rows:
        if r["label"] != label or r["mode"] != mode or r.get(metric) is None:
            continue
        if param and r.get(param) != value:
            continue
        out[r["round"]] = r[metric]
    return out


def main():
    sittings = [(path, load(path)) for path in sys.argv[1:]]
    print("| figure | " + " | ".join(f"sitting {i + 1}: per round → median" for i in range(len(sittings)))
          + " | all rounds | target | met? | sittings that met it |")
    print("|---|" + "---|" * len(sittings) + "---|---|---|---|")
    for label, mode, param, value, metric, other, target, higher in FIGURES:
        cells, everything, medians = [], [], []
        for _, rows in sittings:
            ours = values(rows, "popstate", mode, param, value, metric)
            if other:
                theirs = values(rows, other, mode, param, value, metric)
                qs = [ours[k] / theirs[k] for k in sorted(ours) if theirs.get(k)]
            else:
                qs = [ours[k] for k in sorted(ours)]
            if not qs:
                cells.append("–")
                continue
            med = statistics.median(qs)
            medians.append(med)
            everything.extend(qs)
            cells.append(", ".join(show(q, other, higher) for q in qs) + f" → **{show(med, other, higher)}**")
        overall = show(statistics.median(everything), other, higher) if everything else "–"
        met = len(medians) >= 2 and meets(statistics.median(everything), target, higher)
        alone = sum(1 for m in medians if meets(m, target, higher))
        goal = (f"≥ {show(target, other, True)}" if higher else f"≤ {show(target, other, False)}")
        print(f"| {label}{' ÷ ' + other if other else ''} | " + " | ".join(cells)
              + f" | {overall} | {goal} | {'yes' if met else '**no**'} | {alone} of {len(medians)} |")


def meets(q, target, higher):
    return q >= target if higher else q <= target


def show(q, other, higher):
    if other is None:
        return f"{q:,.1f}" if q < 1000 else f"{q:,.0f}"
    return f"{q * 100:.0f}%" if higher else f"{q:.2f}×"


if __name__ == "__main__":
    main()
