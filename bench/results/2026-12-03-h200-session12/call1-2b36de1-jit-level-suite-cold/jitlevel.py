#!/usr/bin/env python3
"""Driver JIT time of PTX files at CU_JIT_OPTIMIZATION_LEVEL 4 (default), 3, 2, 1.

Usage: python3 jitlevel.py FILE.ptx... ; prints a markdown table (min of rounds, ms),
registers and local (spill) bytes of each cubin, and whether cubins differ.
"""
import ctypes, sys, time

cu = ctypes.CDLL("libcuda.so.1")
def ok(r, what):
    if r != 0:
        raise SystemExit(f"{what} failed: {r}")
ok(cu.cuInit(0), "cuInit")
dev = ctypes.c_int()
ok(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ctx = ctypes.c_void_p()
ok(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "retain")
ok(cu.cuCtxSetCurrent(ctx), "setcurrent")

CU_JIT_OPTIMIZATION_LEVEL = 7
CU_JIT_INPUT_PTX = 1
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3

def link(ptx: bytes, level):
    opts = (ctypes.c_int * 1)(CU_JIT_OPTIMIZATION_LEVEL)
    vals = (ctypes.c_void_p * 1)(level)
    state = ctypes.c_void_p()
    t0 = time.perf_counter()
    if level is None:
        ok(cu.cuLinkCreate_v2(0, None, None, ctypes.byref(state)), "create")
    else:
        ok(cu.cuLinkCreate_v2(1, opts, vals, ctypes.byref(state)), "create")
    buf = ctypes.create_string_buffer(ptx)
    ok(cu.cuLinkAddData_v2(state, CU_JIT_INPUT_PTX, buf, len(ptx) + 1, b"k", 0, None, None), "add")
    cubin = ctypes.c_void_p(); size = ctypes.c_size_t()
    ok(cu.cuLinkComplete(state, ctypes.byref(cubin), ctypes.byref(size)), "complete")
    ms = (time.perf_counter() - t0) * 1e3
    data = ctypes.string_at(cubin, size.value)
    cu.cuLinkDestroy(state)
    mod = ctypes.c_void_p()
    ok(cu.cuModuleLoadData(ctypes.byref(mod), data), "load")
    # The kernel's name: first .entry in the PTX.
    name = ptx.split(b".entry ")[1].split(b"(")[0].strip()
    fn = ctypes.c_void_p()
    ok(cu.cuModuleGetFunction(ctypes.byref(fn), mod, name), "getfunction")
    regs = ctypes.c_int(); local = ctypes.c_int()
    cu.cuFuncGetAttribute(ctypes.byref(regs), CU_FUNC_ATTRIBUTE_NUM_REGS, fn)
    cu.cuFuncGetAttribute(ctypes.byref(local), CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn)
    cu.cuModuleUnload(mod)
    return ms, regs.value, local.value, data

levels = [None, 3, 2, 1]
rounds = 4
print("| PTX | " + " | ".join(f"level {l or 'default'} ms (regs, local B)" for l in levels) + " |")
print("|---|" + "---|" * len(levels))
for path in sys.argv[1:]:
    ptx = open(path, "rb").read()
    link(ptx, None)  # warm-up
    best = {l: 1e9 for l in levels}; info = {}
    for r in range(rounds):
        for l in levels:
            ms, regs, local, data = link(ptx, l)
            best[l] = min(best[l], ms); info[l] = (regs, local, len(data))
    print(f"| {path} | " + " | ".join(f"{best[l]:.1f} ({info[l][0]}, {info[l][1]})" for l in levels) + " |", flush=True)
