#!/usr/bin/env python3
"""Checks that no innermost loop with floating-point multiply-adds touches the stack.

Usage: check_spills.py OBJECT_FILE...
Disassembles each object (objdump -d), finds loops (backward jumps), keeps the innermost
ones that contain vector multiply-adds (vfmadd*/mulps), and reports every instruction in
them that addresses the stack -- a register spill or reload in the hot loop. The stack is
%rsp, and %rbp in functions that set it up as a frame pointer (GCC does when it realigns the
stack for ymm/zmm spill slots); elsewhere %rbp is an ordinary register.
Exit status 1 when any is found. Prints one line per hot loop: address range, FMA count,
stack accesses.
"""
import re
import subprocess
import sys

JUMP = re.compile(r"^\s*([0-9a-f]+):\s+(j\w+)\s+([0-9a-f]+)\s")
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
FUNC = re.compile(r"^[0-9a-f]+ <(.*)>:$")


def analyse(path):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", path], check=True,
                         capture_output=True, text=True).stdout
    bad = 0
    funcs = []  # (name, [(addr, text)])
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            funcs.append((m.group(1), []))
            continue
        m = INSN.match(line)
        if m and funcs:
            funcs[-1][1].append((int(m.group(1), 16), m.group(2)))
    for name, insns in funcs:
        frame = any(re.match(r"mov\s+%rsp,%rbp", t) for _, t in insns)
        stack_regs = ("(%rsp", "(%rbp") if frame else ("(%rsp",)
        loops = []
        for addr, text in insns:
            m = re.match(r"(j\w+)\s+([0-9a-f]+)", text)
            if m and int(m.group(2), 16) < addr:
                loops.append((int(m.group(2), 16), addr))
        for lo, hi in loops:
            inner = [l for l in loops if l != (lo, hi) and lo <= l[0] and l[1] <= hi]
            if inner:
                continue
            body = [t for a, t in insns if lo <= a <= hi]
            fmas = sum(1 for t in body if re.match(r"v?fmadd|v?mulps|vfmadd", t))
            if fmas == 0:
                continue
            stack = [t for t in body if any(r in t for r in stack_regs)]
            print(f"{path}: {name[:60]}: loop {lo:x}-{hi:x}: {fmas} multiply(-add)s, "
                  f"{len(stack)} stack accesses")
            for t in stack:
                print("    " + t)
            bad += len(stack)
    return bad


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    total = sum(analyse(p) for p in sys.argv[1:])
    sys.exit(1 if total else 0)
