#!/usr/bin/env python3
"""Kernel cost of filling an eBPF hash map with BPF_MAP_UPDATE_BATCH, alone.

Creates one BPF_MAP_TYPE_HASH (12-byte keys, 24-byte values: the shape of
SVC_V4), writes N distinct keys in batches of 8,192 (as dataplane/batch.rs
does) and prints the wall time per insert. Nothing is pinned or attached; the
map is freed when the script exits. Needs root (CAP_BPF).

    scripts/htab-insert-cost.py MAX_ENTRIES N NO_PREALLOC(0|1)

BENCHMARKS.md ("Where the cold sync's write time goes") compares
preallocated and not preallocated maps with it.
"""
import ctypes
import os
import struct
import sys
import time

SYS_BPF = 321  # x86_64
BPF_MAP_CREATE = 0
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_TYPE_HASH = 1
BPF_F_NO_PREALLOC = 1
BATCH = 8192
KEY, VALUE = 12, 24

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    if libc.syscall(SYS_BPF, cmd, buf, 128) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def create(max_entries, flags):
    attr = ctypes.create_string_buffer(
        struct.pack("IIIII", BPF_MAP_TYPE_HASH, KEY, VALUE, max_entries, flags), 128
    )
    fd = libc.syscall(SYS_BPF, BPF_MAP_CREATE, attr, 128)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def main():
    max_entries, n, no_prealloc = (int(a) for a in sys.argv[1:4])
    fd = create(max_entries, BPF_F_NO_PREALLOC if no_prealloc else 0)
    keys = bytearray(n * KEY)
    values = bytearray(n * VALUE)
    for i in range(n):
        # 23 keys per "Service", as a cold sync's slots.
        struct.pack_into("III", keys, i * KEY, 0x0A600000 + i // 23, 80 + i % 23, 6)
    key_buf = (ctypes.c_char * len(keys)).from_buffer(keys)
    value_buf = (ctypes.c_char * len(values)).from_buffer(values)
    key_addr, value_addr = ctypes.addressof(key_buf), ctypes.addressof(value_buf)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        bpf(
            BPF_MAP_UPDATE_BATCH,
            struct.pack(
                "QQQQIIQQ",
                0,
                0,
                key_addr + start * KEY,
                value_addr + start * VALUE,
                count,
                fd,
                0,
                0,
            ),
        )
    elapsed = time.perf_counter() - started
    os.close(fd)
    print(
        f"max_entries={max_entries} no_prealloc={no_prealloc} n={n}: "
        f"{elapsed * 1e3:.0f} ms, {elapsed / n * 1e9:.0f} ns per insert"
    )


if __name__ == "__main__":
    main()
