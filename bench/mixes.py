#!/usr/bin/env python3
"""What each part of a session costs the server: one client, sessions one after another.

    python3 bench/mixes.py SESSIONS NAME:PORT:PID [NAME:PORT:PID ...]   # after bench/mkmaildrop.py

Runs four command mixes against each server (greeting and QUIT; then USER and PASS as u0005;
then STAT, LIST, UIDL; then RETR of all 20 messages), SESSIONS sessions per mix and server,
three rounds with the servers alternating, and prints the server's CPU per session (user and
system time from /proc/PID/stat, a median over the rounds). The kernel counts CPU in clock ticks
(10 ms), so the resolution is 10 ms / SESSIONS: with 1,000 sessions, 10 µs. Loopback only, and
every loop is bounded by SESSIONS; std only. docs/performance.md (round 2) shows what it found.
"""

import os
import socket
import statistics
import sys

TICK = os.sysconf("SC_CLK_TCK")
LOGIN = [("USER u0005", False), ("PASS benchpass", False)]
LISTS = [("STAT", False), ("LIST", True), ("UIDL", True)]
MIXES = {
    "greeting, QUIT": [("QUIT", False)],
    "+ USER, PASS": LOGIN + [("QUIT", False)],
    "+ STAT, LIST, UIDL": LOGIN + LISTS + [("QUIT", False)],
    "+ RETR of all 20": LOGIN + LISTS + [(f"RETR {i}", True) for i in range(1, 21)] + [("QUIT", False)],
}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def session(port, commands):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies = s.makefile("rb", buffering=1 << 20)
        replies.readline()
        for command, multi_line in commands:
            s.sendall(command.encode() + b"\r\n")
            first = replies.readline()
            if not first.startswith(b"+OK"):
                sys.exit(f"mixes.py: {command!r} got {first!r}")
            while multi_line and replies.readline() not in (b".\r\n", b""):
                pass


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n = int(sys.argv[1])
    targets = [(name, int(port), int(pid)) for name, port, pid in (t.split(":") for t in sys.argv[2:])]
    costs = {}
    for _ in range(3):
        for mix, commands in MIXES.items():
            for name, port, pid in targets:
                before = cpu_seconds(pid)
                for _ in range(n):
                    session(port, commands)
                costs.setdefault((mix, name), []).append((cpu_seconds(pid) - before) * 1e6 / n)
    for mix in MIXES:
        row = "  ".join(f"{name} {statistics.median(costs[(mix, name)]):6.0f} µs" for name, _, _ in targets)
        print(f"{mix:20} {row}")


if __name__ == "__main__":
    main()
