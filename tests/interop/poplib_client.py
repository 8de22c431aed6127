"""A POP3 client built on Python's stdlib poplib, driven by tests/interop.rs.

Usage:
    poplib_client.py read PORT USER PASSWORD
    poplib_client.py dele PORT USER PASSWORD quit|drop N [N ...]

It prints one record per line, fields separated by single spaces, so that the Rust side can parse
them without a JSON library. Message contents are printed as hex (poplib's lines joined with
CRLF, as a mail reader would store them), so every byte survives the trip.

    read: welcome TEXT | stat COUNT SIZE | list N SIZE | listone N SIZE | uidl N UID |
          uidlone N UID | retr N OCTETS HEX | top0 N HEX | quit TEXT
    dele: stat-before COUNT SIZE | dele N TEXT | retr-deleted N ERROR | stat-after COUNT SIZE |
          quit TEXT | dropped

Any unexpected -ERR raises, which exits non-zero with a traceback on stderr.
"""

import poplib
import sys
import time

HOST = "127.0.0.1"
TIMEOUT = 20


def login(port, user, password):
    """Connects and logs in. A session that just ended may still hold the maildrop's lock for a
    moment (the server notices a closed socket asynchronously), so -ERR [IN-USE] is retried."""
    deadline = time.monotonic() + 10
    while True:
        pop = poplib.POP3(HOST, port, timeout=TIMEOUT)
        pop.user(user)
        try:
            pop.pass_(password)
            return pop
        except poplib.error_proto as err:
            pop.close()
            if b"[IN-USE]" not in err.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def text(resp):
    return resp.decode("ascii", "replace")


def emit(*fields):
    print(" ".join(str(f) for f in fields), flush=True)


def read(pop):
    count, size = pop.stat()
    emit("stat", count, size)
    _, listing, _ = pop.list()
    for line in listing:
        emit("list", text(line))
    _, uids, _ = pop.uidl()
    for line in uids:
        emit("uidl", text(line))
    for n in range(1, count + 1):
        # Single-line forms: "+OK n size" and "+OK n uid".
        emit("listone", text(pop.list(n)).removeprefix("+OK "))
        emit("uidlone", text(pop.uidl(n)).removeprefix("+OK "))
        _, lines, octets = pop.retr(n)
        emit("retr", n, octets, b"\r\n".join(lines).hex())
        _, lines, _ = pop.top(n, 0)
        emit("top0", n, b"\r\n".join(lines).hex())
    emit("quit", text(pop.quit()))


def dele(pop, end, numbers):
    count, size = pop.stat()
    emit("stat-before", count, size)
    for n in numbers:
        emit("dele", n, text(pop.dele(n)))
    for n in numbers:
        try:
            pop.retr(n)
            emit("retr-deleted", n, "+OK")
        except poplib.error_proto as err:
            emit("retr-deleted", n, text(err.args[0]))
    count, size = pop.stat()
    emit("stat-after", count, size)
    if end == "quit":
        emit("quit", text(pop.quit()))
    elif end == "drop":
        # Close the socket without QUIT: the session must not enter UPDATE.
        pop.close()
        emit("dropped")
    else:
        raise SystemExit(f"unknown ending {end!r}")


def main(argv):
    if len(argv) < 5:
        raise SystemExit(__doc__)
    mode, port, user, password = argv[1], int(argv[2]), argv[3], argv[4]
    pop = login(port, user, password)
    emit("welcome", text(pop.getwelcome()))
    if mode == "read":
        read(pop)
    elif mode == "dele":
        dele(pop, argv[5], [int(n) for n in argv[6:]])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
