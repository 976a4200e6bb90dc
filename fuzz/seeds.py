#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/<target>/seed-*).

Run from the repository root after changing a format: `python3 fuzz/seeds.py`.
"""
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target: str, name: str, data: bytes) -> None:
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def resp(*args: str | bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


# The first byte also chooses where resp_framer cuts the input in two.
write("resp_framer", "ping", b"\x05" + resp("PING"))
write("resp_framer", "pipeline", b"\x10" + resp("IDEM.BEGIN", "k", "LEASE", "5000") + resp("COUNTER.GET", "c"))
write("resp_framer", "inline", b"\x03PING\r\nECHO hello\r\n")
write("resp_framer", "partial", b"\x07*2\r\n$4\r\nPING\r\n$10\r\nabc")
write("resp_framer", "too-many-args", b"\x00*9\r\n" + b"$1\r\na\r\n" * 9)
write("resp_framer", "empty-array", b"\x01*0\r\n*-1\r\n\r\n")

cmds = [
    ["IDEM.BEGIN", "pay:1", "FP", "abc", "LEASE", "30000", "WAIT", "100"],
    ["IDEM.COMMIT", "pay:1", "1", "result", "KEEP", "60000"],
    ["IDEM.ABORT", "pay:1", "1"],
    ["IDEM.RENEW", "pay:1", "1", "LEASE", "5000"],
    ["IDEM.GET", "pay:1"],
    ["CLAIM", "email:a", "user-1", "TTL", "1000"],
    ["CLAIM.ALL", "u", "a", "b"],
    ["LOCK", "job", "worker-1", "LEASE", "1000", "WAIT", "10"],
    ["COUNTER.ADD", "stock", "-1", "MIN", "0", "OP", "op-1"],
    ["VALUE.SET", "cfg", "v", "IFVERSION", "3"],
    ["FSM.MOVE", "order", "paid", "FROM", "none", "pending"],
    ["SLOTS.RESERVE", "room", "2", "4", "alice", "SIZE", "10"],
    ["TOKEN.NEW", "form", "TTL", "1000"],
]
for c in cmds:
    write("command_parser", c[0].lower().replace(".", "-"), b"\x00".join(x.encode() for x in c))


def put_bytes(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def record(lsn: int, kind: int, payload: bytes, synced: int = 0, time_ms: int = 0) -> bytes:
    body = struct.pack("<QQQB", lsn, synced, time_ms, kind) + payload
    head = struct.pack("<I", len(body))
    return head + struct.pack("<I", zlib.crc32(head + body)) + body


counter = bytes([9]) + put_bytes(b"stock") + struct.pack("<q", 7)
idem_running = bytes([1]) + put_bytes(b"pay:1") + b"\x01" + put_bytes(b"fp") + b"\x00" + struct.pack("<QIQ", 1, 1, 5000)
idem_done = bytes([1]) + put_bytes(b"pay:1") + b"\x00" + b"\x01" + put_bytes(b"ok") + struct.pack("<Q", 9000)
claim = bytes([3]) + put_bytes(b"email") + put_bytes(b"u1") + b"\x01" + struct.pack("<Q", 100)
slots = bytes([13]) + put_bytes(b"room") + struct.pack("<III", 10, 2, 4) + put_bytes(b"alice")


def changes(*cs: bytes) -> bytes:
    return struct.pack("<I", len(cs)) + b"".join(cs)


# wal_record: a changes payload as is (decode_changes_for_test reads the
# whole input), and framed records.
write("wal_record", "changes", changes(counter, idem_running, claim))
write("wal_record", "changes-slots", changes(idem_done, slots))
write("wal_record", "framed", record(1, 1, changes(counter)))
write("wal_record", "fence", record(2, 2, struct.pack("<Q", 77)))

# wal_recovery: flags byte, then the segment after its header (bit 1 clear)
# or the whole file (bit 1 set); bit 0 asks the target to fix checksums.
recs = record(1, 1, changes(counter)) + record(2, 1, changes(idem_running), synced=1) + record(3, 3, b"", synced=2)
write("wal_recovery", "valid", b"\x00" + recs)
write("wal_recovery", "fix-checksums", b"\x01" + recs)
write("wal_recovery", "torn-tail", b"\x00" + recs[:-5])
damaged = bytearray(recs)
damaged[40] ^= 0xFF
write("wal_recovery", "damaged-middle", b"\x00" + bytes(damaged))
header = b"IDEMWAL\x00" + struct.pack("<IIQI", 1, 32, 1, 0)
header += struct.pack("<I", zlib.crc32(header))
write("wal_recovery", "whole-file", b"\x02" + header + recs)

# http_json: the first byte is 0 for /v1/command, else 1 + an API v1 route.
write("http_json", "command", b"\x00" + b'["IDEM.BEGIN","k",{"base64":"AP8="},"LEASE","5000"]')
write("http_json", "command-bad", b'\x00["a", {"base64": "!!"}, 1, null]')
write("http_json", "v1-begin", b'\x01{"fp":"abc","lease_ms":5000,"wait_ms":0}')
write("http_json", "v1-commit", b'\x02{"fence":1,"result":"ok","keep_ms":60000}')
write("http_json", "v1-list", b'\x09{"keys":["a","b"],"owner":"u"}')
write("http_json", "v1-blank", b"\x05  \n")

# gateway_extract: route spec, Idempotency-Key, query, path tail,
# Content-Type, body, separated by 0xFF.
sep = b"\xff"
write("gateway_extract", "ietf", sep.join([b"", b'"abc-123"', b"q=1", b"42", b"application/json", b'{"a":{"b":"x"},"n":[1,2.5,true]}']))
write("gateway_extract", "fields", sep.join([b"POST /orders/{id} key=json:a.b fingerprint=json:n+query:q scope=header:Idempotency-Key", b"k", b"q=2&q=3", b"7", b"text/json", b'{"a":{"b":{"c":1}},"n":null}']))
write("gateway_extract", "not-json", sep.join([b"", b"key", b"", b"x", b"application/json", b"{not json"]))
