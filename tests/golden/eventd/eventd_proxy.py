#!/usr/bin/env python3
"""Recording proxy for the ctdb-eventd unix socket.

Usage: eventd_proxy.py <listen-socket> <upstream-socket> <record-dir>

Accepts clients on <listen-socket>, relays every byte to and from <upstream-socket> and, as
the bytes pass, cuts the stream into eventd packets (the first 4 bytes of a packet are its total
length, host order) and writes each packet to <record-dir>/<seq>-<c2s|s2c>.bin, where <seq> is
a global 4-digit counter in the order packets completed. Runs until killed (SIGTERM).
"""

import os
import selectors
import socket
import struct
import sys


def main():
    listen_path, upstream_path, record_dir = sys.argv[1:4]
    os.makedirs(record_dir, exist_ok=True)
    try:
        os.unlink(listen_path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(8)

    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, None)
    seq = [0]
    # peer socket -> (other socket, direction label, pending bytes)
    links = {}

    def record(direction, packet):
        seq[0] += 1
        name = os.path.join(record_dir, "%04d-%s.bin" % (seq[0], direction))
        with open(name, "wb") as f:
            f.write(packet)
        print("%s %d bytes: %s" % (name, len(packet), packet.hex()), flush=True)

    def close_pair(sock):
        other = links[sock][0]
        for s in (sock, other):
            if s in links:
                sel.unregister(s)
                s.close()
                del links[s]

    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is server:
                client, _ = server.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(upstream_path)
                links[client] = [upstream, "c2s", b""]
                links[upstream] = [client, "s2c", b""]
                sel.register(client, selectors.EVENT_READ, None)
                sel.register(upstream, selectors.EVENT_READ, None)
                continue
            if sock not in links:
                continue
            data = sock.recv(65536)
            if not data:
                close_pair(sock)
                continue
            link = links[sock]
            link[0].sendall(data)
            link[2] += data
            while len(link[2]) >= 4:
                (length,) = struct.unpack("=I", link[2][:4])
                if length < 4 or len(link[2]) < length:
                    break
                record(link[1], link[2][:length])
                link[2] = link[2][length:]


if __name__ == "__main__":
    main()
