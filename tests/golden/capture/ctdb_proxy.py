#!/usr/bin/env python3
"""Recording proxy for CTDB unix-domain sockets.

Listens on one or more unix socket paths; every accepted connection is
forwarded byte-for-byte to the matching upstream daemon socket.  Both
directions are split into CTDB frames (each frame starts with a 4-byte
little-endian length that counts the whole frame) and appended to a JSON-lines
log:

  {"ev":"open","conn":N,"label":L,"pid":P,"cmd":"ctdb status","t":...}
  {"ev":"frame","conn":N,"label":L,"dir":"c2d"|"d2c","seq":S,"t":...,"hex":...}
  {"ev":"close","conn":N,...}
  {"ev":"mark","text":...}            (written by `ctdb_proxy.py mark`)

usage:
  ctdb_proxy.py serve --log FILE --pidfile FILE LISTEN=UPSTREAM=LABEL ...
  ctdb_proxy.py mark --log FILE TEXT

The proxy's own pid is what the daemon sees as the client pid (SO_PEERCRED),
which matters only for pid-based controls such as PROCESS_EXISTS.
"""

import json
import os
import signal
import socket
import struct
import sys
import threading
import time

LOG_LOCK = threading.Lock()
SEQ = [0]
CONN_ID = [0]


def log_write(fh, record):
    with LOG_LOCK:
        SEQ[0] += 1
        record["seq"] = SEQ[0]
        record["t"] = time.time()
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def peer_info(sock):
    try:
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", cred)
    except OSError:
        return 0, ""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        cmd = ""
    return pid, cmd


def pump(src, dst, fh, conn, label, direction, done):
    """Copies src→dst and logs complete frames.  Bytes are forwarded as soon
    as they arrive (right after logging any frame they complete)."""
    buf = b""
    try:
        while True:
            try:
                chunk = src.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            # Log complete frames before forwarding the bytes that complete
            # them, so a request is always logged before its reply.
            while len(buf) >= 4:
                (length,) = struct.unpack_from("<I", buf, 0)
                if length < 4:
                    # Not a CTDB stream (or corrupt): log the rest raw and stop parsing.
                    log_write(fh, {"ev": "junk", "conn": conn, "label": label,
                                   "dir": direction, "hex": buf.hex()})
                    buf = b""
                    break
                if len(buf) < length:
                    break
                frame, buf = buf[:length], buf[length:]
                log_write(fh, {"ev": "frame", "conn": conn, "label": label,
                               "dir": direction, "hex": frame.hex()})
            try:
                dst.sendall(chunk)
            except OSError:
                break
    finally:
        if buf:
            log_write(fh, {"ev": "partial", "conn": conn, "label": label,
                           "dir": direction, "hex": buf.hex()})
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.set()


def handle(client, upstream_path, label, fh):
    with LOG_LOCK:
        CONN_ID[0] += 1
        conn = CONN_ID[0]
    pid, cmd = peer_info(client)
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(upstream_path)
    except OSError as e:
        log_write(fh, {"ev": "connect-failed", "conn": conn, "label": label,
                       "pid": pid, "cmd": cmd, "error": str(e)})
        client.close()
        return
    log_write(fh, {"ev": "open", "conn": conn, "label": label, "pid": pid, "cmd": cmd})
    d1, d2 = threading.Event(), threading.Event()
    t1 = threading.Thread(target=pump, args=(client, upstream, fh, conn, label, "c2d", d1), daemon=True)
    t2 = threading.Thread(target=pump, args=(upstream, client, fh, conn, label, "d2c", d2), daemon=True)
    t1.start()
    t2.start()
    # A CTDB client that exits closes its end; the daemon then closes ours.
    # Either side closing ends the session.
    while not (d1.is_set() and d2.is_set()):
        if d1.wait(0.2) or d2.is_set():
            # give the other direction a moment to drain, then close both
            d1.wait(0.5)
            d2.wait(0.5)
            break
    for s in (client, upstream):
        try:
            s.close()
        except OSError:
            pass
    log_write(fh, {"ev": "close", "conn": conn, "label": label})


def listener(path, upstream_path, label, fh):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=handle, args=(client, upstream_path, label, fh), daemon=True).start()


def serve(argv):
    log_path = None
    pidfile = None
    maps = []
    i = 0
    while i < len(argv):
        if argv[i] == "--log":
            log_path = argv[i + 1]
            i += 2
        elif argv[i] == "--pidfile":
            pidfile = argv[i + 1]
            i += 2
        else:
            parts = argv[i].split("=")
            if len(parts) != 3:
                sys.exit("bad mapping %r (want LISTEN=UPSTREAM=LABEL)" % argv[i])
            maps.append(parts)
            i += 1
    if not log_path or not maps:
        sys.exit(__doc__)
    fh = open(log_path, "a", encoding="utf-8")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for listen_path, upstream_path, label in maps:
        threading.Thread(target=listener, args=(listen_path, upstream_path, label, fh), daemon=True).start()
    # Only announce readiness once every socket exists.
    deadline = time.time() + 5
    while time.time() < deadline and not all(os.path.exists(m[0]) for m in maps):
        time.sleep(0.05)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    while not stop.wait(0.5):
        pass
    for listen_path, _, _ in maps:
        try:
            os.unlink(listen_path)
        except OSError:
            pass
    with LOG_LOCK:
        fh.flush()


def mark(argv):
    if len(argv) != 3 or argv[0] != "--log":
        sys.exit(__doc__)
    with open(argv[1], "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"ev": "mark", "t": time.time(), "text": argv[2]}) + "\n")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "serve":
        serve(sys.argv[2:])
    elif sys.argv[1] == "mark":
        mark(sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
