"""A DNS server for tests: answers A queries for one name with a list of addresses that the
test changes as it goes (TTL 0, so nothing caches an old answer). Other names get NXDOMAIN;
other record types of the name an empty answer."""

import socket
import struct
import threading


class DnsServer:
    def __init__(self, name, addresses):
        self.name = name.rstrip(".").lower()
        self.addresses = list(addresses)
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        self._stop = True
        self.sock.close()

    def _serve(self):
        while not self._stop:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(query), client)
            except (OSError, ValueError, struct.error):
                continue

    def _answer(self, query):
        (ident, _flags, qdcount) = struct.unpack(">HHH", query[:6])
        if qdcount != 1:
            raise ValueError("one question expected")
        labels, at = [], 12
        while query[at]:
            length = query[at]
            labels.append(query[at + 1:at + 1 + length].decode("ascii").lower())
            at += 1 + length
        question = query[12:at + 5]
        qtype = struct.unpack(">H", query[at + 1:at + 3])[0]
        self.queries += 1
        name = ".".join(labels)
        if name != self.name:
            return struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question
        answers = []
        if qtype == 1:
            for address in list(self.addresses):
                answers.append(struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(address))
        header = struct.pack(">HHHHHH", ident, 0x8180, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)
