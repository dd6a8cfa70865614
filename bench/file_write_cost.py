#!/usr/bin/env python3
"""What the kernel charges per byte for a file written the way the file exporter writes it:
appended in lines of a batch's size, rotated at 256 MiB with one rotation kept (the bench's
`file` scenario). This is the part of the file exporter's cost that no renderer can take off.

    python3 bench/file_write_cost.py [--directory DIR] [--preallocate] [--gib 2] [--line-size N]

--line-size is the bytes per `write`: one 100-span batch's JSON is ~65,000; the exporter writes the
batches waiting together at once, up to ~1 MiB of requests.

Prints CPU nanoseconds per byte (user and system; nearly all of it is system).
"""

import argparse
import ctypes
import os
import resource
import tempfile

ROTATE_AT = 256 << 20
LINE_SIZE = 65_000  # about one 100-span batch of JSON
PREALLOCATE_STEP = 16 << 20
FALLOC_FL_KEEP_SIZE = 1


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write(directory, total, preallocate, line_size):
    line = b"x" * (line_size - 1) + b"\n"
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    live = os.path.join(directory, "traces.jsonl")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd, size, reserved, written = os.open(live, flags, 0o644), 0, 0, 0
    while written < total:
        if size + len(line) > ROTATE_AT:
            os.close(fd)
            if os.path.exists(live + ".1"):
                os.unlink(live + ".1")
            os.rename(live, live + ".1")
            fd, size, reserved = os.open(live, flags, 0o644), 0, 0
        if preallocate and size + len(line) > reserved:
            if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(reserved), ctypes.c_long(PREALLOCATE_STEP)):
                raise OSError(ctypes.get_errno(), "fallocate")
            reserved += PREALLOCATE_STEP
        os.write(fd, line)
        size += len(line)
        written += len(line)
    os.close(fd)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", default=tempfile.gettempdir(), help="where to write (default: the temp dir)")
    parser.add_argument("--preallocate", action="store_true", help="reserve the file's blocks ahead with fallocate")
    parser.add_argument("--gib", type=float, default=2, help="how much to write in all")
    parser.add_argument("--line-size", type=int, default=LINE_SIZE, help="bytes per write (default: one batch)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        started = cpu_seconds()
        written = write(directory, int(args.gib * (1 << 30)), args.preallocate, args.line_size)
        spent = cpu_seconds() - started
    print(f"{args.directory}{' (preallocated)' if args.preallocate else ''}, {args.line_size:,} bytes a write: "
          f"{spent * 1e9 / written:.3f} CPU ns per byte")


if __name__ == "__main__":
    main()
