#!/usr/bin/env python3
"""Makes the benchmark's maildrops: deterministic, std-only, LF line ends.

    python3 bench/mkmaildrop.py --out /tmp/popstate-bench [--users 10000] [--chown 20000:20000]

Writes under OUT:

    maildirs/USER/{new,cur,tmp}   popstate's layout (--maildir-root OUT/maildirs); Dovecot reads
                                  the same folders with mail_location = maildir:OUT/maildirs/%u
    users                         USER:password lines (popstate --users OUT/users)
    dovecot-passwd                USER:{PLAIN}password:UID:GID::HOME:: (Dovecot's passwd-file)
    manifest.json                 what was made, with sizes, so a reader can check the numbers

The users:

    u0001 .. uNNNN   the same 20 messages, 2 KB to 200 KB (a geometric spread, shuffled), with
                     lines that start with '.' and lines that are a lone '.'; every user's files
                     are hard links to one pool, so 10,000 users cost 20 files of disk
    big              one message of 100,000,000 bytes
    sz1k .. sz10m    one message of 1 KB, 10 KB, 100 KB, 1 MB, 10 MB (RETR MB/s against size)
    m100 .. m100000  100, 1,000, 10,000, 100,000 distinct small messages (2-6 KB): login time
                     against the size of the maildrop

Messages sit in cur/ with Dovecot-style names, `TIME.MnPpid.bench,S=LF_SIZE,W=CRLF_SIZE:2,S`,
as Dovecot's own delivery writes them, so neither server has to rename anything. The same seed
always gives the same bytes. Running it again on the same OUT only makes what is missing.
"""

import argparse
import json
import os
import random
import sys

SEED = 1939
PASSWORD = "benchpass"
WORDS = (
    "pop maildrop octet server client message line stuffing dot terminator greeting "
    "transaction authorization update unique listing scan retrieve delete quit noop "
    "the a of and to in is it that for on with as was at by from this be are"
).split()
BASE_TIME = 1_700_000_000


def line_pool(rng, count=4096):
    """Lines of words made once; message bodies pick from them, which is fast in Python.
    About 1% are a lone '.' and 3% start with '.', so byte-stuffing is exercised."""
    lines = []
    for _ in range(count):
        r = rng.random()
        if r < 0.01:
            line = "."  # a lone dot: must go out as ".." or the client stops early
        elif r < 0.04:
            line = "." + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
        elif r < 0.06:
            line = ""
        else:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        lines.append(line + "\n")
    return lines


POOL = line_pool(random.Random(SEED))


def body_lines(rng, size):
    """Lines (LF ends) from the pool adding up to about `size` bytes."""
    out = []
    total = 0
    while total < size:
        line = POOL[rng.randrange(len(POOL))]
        out.append(line)
        total += len(line)
    return "".join(out)


def message(rng, n, size):
    head = (
        f"From: Sender {n} <sender{n}@example.org>\n"
        f"To: Reader <reader@example.org>\n"
        f"Subject: benchmark message {n}\n"
        f"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        f"Message-ID: <bench.{n}@example.org>\n"
        "\n"
    )
    body = body_lines(rng, max(0, size - len(head)))
    return (head + body).encode("ascii")


def big_message(rng, total):
    """`total` bytes exactly: one 1 MB block of lines repeated, then a tail, LF ends."""
    block = message(rng, 0, 1_000_000)[:1_000_000]
    block = block[: block.rfind(b"\n") + 1]
    parts, left = [], total
    while left > 0:
        piece = block[:left]
        parts.append(piece)
        left -= len(piece)
    data = b"".join(parts)
    if not data.endswith(b"\n"):
        data = data[:-1] + b"\n"
    return data


def crlf_size(data):
    """The size RFC 1939 means: every line end counted as CRLF, no stuffing."""
    lf = data.count(b"\n")
    crlf = data.count(b"\r\n")
    size = len(data) + (lf - crlf)
    if data and not data.endswith(b"\n"):
        size += 2
    return size


def file_name(seq, data):
    return f"{BASE_TIME + seq}.M{seq:06d}P1939.bench,S={len(data)},W={crlf_size(data)}:2,S"


def write_if_missing(path, data):
    if os.path.exists(path) and os.path.getsize(path) == len(data):
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def make_maildir(path):
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)


def link_into(user_dir, pool_files):
    """Hard-links each (name, pool path) into user_dir/cur."""
    cur = os.path.join(user_dir, "cur")
    for name, src in pool_files:
        dst = os.path.join(cur, name)
        if not os.path.exists(dst):
            os.link(src, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--users", type=int, default=10000, help="u0001..uNNNN (default 10000)")
    ap.add_argument("--big-bytes", type=int, default=100_000_000)
    ap.add_argument(
        "--maildrop-sizes",
        default="100,1000,10000,100000",
        help="message counts for the m<N> users (default 100,1000,10000,100000)",
    )
    ap.add_argument("--chown", default="", help="UID:GID to own everything (for Dovecot)")
    args = ap.parse_args()

    out = os.path.abspath(args.out)
    root = os.path.join(out, "maildirs")
    pool = os.path.join(out, "pool")
    os.makedirs(root, exist_ok=True)
    os.makedirs(pool, exist_ok=True)
    manifest = {"seed": SEED, "users": {}}

    # The 20 messages every uNNNN user shares: 2 KB to 200 KB, geometric, shuffled.
    rng = random.Random(SEED)
    sizes = [round(2000 * (100 ** (i / 19))) for i in range(20)]
    rng.shuffle(sizes)
    shared = []
    for i, size in enumerate(sizes):
        data = message(rng, i + 1, size)
        name = file_name(i, data)
        path = os.path.join(pool, "u-" + name)
        write_if_missing(path, data)
        shared.append((name, path, len(data), crlf_size(data)))
    manifest["shared_messages"] = {
        "count": 20,
        "lf_bytes": sum(s[2] for s in shared),
        "crlf_octets": sum(s[3] for s in shared),
        "sizes_crlf": [s[3] for s in shared],
    }
    names = [f"u{i:04d}" for i in range(1, args.users + 1)]
    for n, user in enumerate(names):
        d = os.path.join(root, user)
        make_maildir(d)
        link_into(d, [(s[0], s[1]) for s in shared])
        if n % 2000 == 0:
            print(f"users: {user}", file=sys.stderr)

    # One-message users: big and the RETR-size series.
    singles = [("sz1k", 1_000), ("sz10k", 10_000), ("sz100k", 100_000), ("sz1m", 1_000_000),
               ("sz10m", 10_000_000), ("big", args.big_bytes)]
    for user, size in singles:
        rng = random.Random(f"{SEED}-{user}")
        data = big_message(rng, size) if size >= 1_000_000 else message(rng, 1, size)
        name = file_name(0, data)
        path = os.path.join(pool, f"{user}-{name}")
        if not os.path.exists(path):
            write_if_missing(path, data)
        d = os.path.join(root, user)
        make_maildir(d)
        link_into(d, [(name, path)])
        manifest["users"][user] = {"messages": 1, "lf_bytes": len(data), "crlf_octets": crlf_size(data)}
        names.append(user)
        print(f"{user}: {len(data)} bytes", file=sys.stderr)

    # Maildrops of many distinct small files (distinct inodes, so a cold login really reads).
    for count in [int(c) for c in args.maildrop_sizes.split(",") if c]:
        user = f"m{count}"
        d = os.path.join(root, user)
        make_maildir(d)
        cur = os.path.join(d, "cur")
        rng = random.Random(f"{SEED}-{user}")
        have = len(os.listdir(cur))
        total_lf = total_crlf = 0
        for i in range(count):
            data = message(rng, i + 1, rng.randint(2000, 6000))
            total_lf += len(data)
            total_crlf += crlf_size(data)
            if have < count:
                write_if_missing(os.path.join(cur, file_name(i, data)), data)
        manifest["users"][user] = {"messages": count, "lf_bytes": total_lf, "crlf_octets": total_crlf}
        names.append(user)
        print(f"{user}: {count} messages, {total_lf} bytes", file=sys.stderr)

    with open(os.path.join(out, "users"), "w") as f:
        f.write("# benchmark users, made by bench/mkmaildrop.py\n")
        for user in names:
            f.write(f"{user}:{PASSWORD}\n")
    uid, gid = (args.chown.split(":") + ["0"])[:2] if args.chown else ("0", "0")
    with open(os.path.join(out, "dovecot-passwd"), "w") as f:
        for user in names:
            f.write(f"{user}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{root}/{user}::\n")
    manifest["users"]["u0001..u%04d" % args.users] = {"messages": 20}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)

    if args.chown:
        u, g = int(uid), int(gid)
        for dirpath, dirnames, filenames in os.walk(out):
            os.chown(dirpath, u, g)
            for fn in filenames:
                os.chown(os.path.join(dirpath, fn), u, g, follow_symlinks=False)
    print(f"done: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
