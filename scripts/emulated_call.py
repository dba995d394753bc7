#!/usr/bin/env python3
"""Run one function of a process snapshot on an emulated x86-64 CPU that has AVX-512.

How the AVX-512 kernels are tested on machines without AVX-512 (dsv4-kernels'
tests/avx512_emulated.rs writes the snapshot and reads the result). The emulator is Bochs'
CPU, through the `bochscpu` package (pip install bochscpu-python==0.3.1), which implements
AVX-512 F, BW, DQ and VL.

    emulated_call.py SNAPSHOT RESULT

SNAPSHOT (little-endian u64 fields): magic b"DSV4SNAP", entry address, argument, stack top
(16-byte aligned), result address, result length, region count; then per region its address,
length, whether it holds code, and its bytes. Every region is mapped at its own address, the
function is called as `entry(argument)` with a return address that is never mapped, and when
it returns there the result range is written to RESULT. Anything else (a fault, an instruction
the emulator lacks) is reported on stderr with exit status 1.
"""

import ctypes
import os
import struct
import sys

import bochscpu
import bochscpu.cpu
import bochscpu.memory

PAGE = bochscpu.memory.page_size()
# Where the call returns: page 1, which Linux never maps (vm.mmap_min_addr).
RETURN_ADDRESS = 0x1000
PAGE_TABLES = 0x10_0000
FIRST_FRAME = 0x1000_0000
# Page table flags as bochscpu's PageMapLevel4Table takes them.
CODE, DATA = 0, 1
# CR4: OSFXSR, OSXMMEXCPT, OSXSAVE; XCR0: x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM.
CR4_SIMD = (1 << 9) | (1 << 10) | (1 << 18)
XCR0_AVX512 = 0xE7
# MXCSR at reset: every floating-point exception masked, round to nearest.
MXCSR_DEFAULT = 0x1F80


def read_snapshot(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"DSV4SNAP":
        raise SystemExit(f"{path}: not a dsv4 snapshot")
    entry, arg, stack_top, result_addr, result_len, count = struct.unpack_from("<6Q", data, 8)
    at = 8 + 6 * 8
    regions = []
    for _ in range(count):
        addr, length, code = struct.unpack_from("<3Q", data, at)
        at += 24
        regions.append((addr, data[at : at + length], bool(code)))
        at += length
    return entry, arg, stack_top, (result_addr, result_len), regions


def map_regions(regions):
    """Maps every page of every region at its own address. Returns the page table, which owns
    the table pages and must outlive the run."""
    table = bochscpu.memory.PageMapLevel4Table()
    frame = FIRST_FRAME
    for addr, content, code in regions:
        for offset in range(0, len(content), PAGE):
            page = content[offset : offset + PAGE]
            host = bochscpu.memory.allocate_host_page()
            ctypes.memmove(host, page, len(page))
            bochscpu.memory.page_insert(frame, host)
            table.insert(addr + offset, frame, CODE if code else DATA)
            frame += PAGE
    for host, gpa in table.commit(PAGE_TABLES):
        bochscpu.memory.page_insert(gpa, host)
    return table


def flat_segment(selector, attr):
    seg = bochscpu.Segment()
    seg.present = True
    seg.selector = selector
    seg.base = 0
    seg.limit = 0xFFFF_FFFF
    seg.attr = attr
    return seg


def main():
    snapshot, result_path = sys.argv[1:3]
    entry, arg, stack_top, (result_addr, result_len), regions = read_snapshot(snapshot)
    session = bochscpu.Session()

    def missing_page(gpa):
        raise RuntimeError(f"emulated code touched physical page {gpa:#x}, which is not mapped")

    session.missing_page_handler = missing_page
    table = map_regions(regions)
    cr3 = PAGE_TABLES

    state = bochscpu.State()
    bochscpu.cpu.set_long_mode(state)
    state.cr3 = cr3
    state.cr4 = state.cr4 | CR4_SIMD
    state.xcr0 = XCR0_AVX512
    state.mxcsr = MXCSR_DEFAULT
    state.rip = entry
    state.rdi = arg
    state.rsp = stack_top - 8
    state.cs = flat_segment(0x33, 0x22FB)
    data = flat_segment(0x2B, 0xCF3)
    state.ds = state.ss = state.es = state.fs = state.gs = data
    session.cpu.state = state
    if not bochscpu.memory.virt_write(cr3, stack_top - 8, list(struct.pack("<Q", RETURN_ADDRESS))):
        raise SystemExit("the stack top is not in a mapped region")

    stopped = {}

    def exception(sess, cpu_id, vector, error_code):
        stopped["vector"] = vector
        stopped["error"] = error_code
        sess.stop()

    hook = bochscpu.Hook()
    hook.exception = exception
    session.run([hook])
    final = session.cpu.state
    if final.rip != RETURN_ADDRESS:
        print(
            f"emulated call stopped at rip={final.rip:#x} with exception {stopped.get('vector')}"
            f" (error code {stopped.get('error')}, cr2={final.cr2:#x})",
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(1)
    result = bytes(bochscpu.memory.virt_read(cr3, result_addr, result_len))
    with open(result_path, "wb") as f:
        f.write(result)
    del table
    sys.stdout.flush()
    # The binding crashes while tearing its objects down; the result is already written.
    os._exit(0)


if __name__ == "__main__":
    main()
