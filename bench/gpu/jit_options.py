#!/usr/bin/env python3
"""The driver JIT's time, registers and cubin for PTX files, per option.

For each PTX file: cuLink at the driver's default, CU_JIT_FAST_COMPILE=1 and
CU_JIT_OPTIMIZATION_LEVEL 3, 2, 1 (best of ROUNDS, after a warm-up link);
registers and local (spill) bytes of the loaded kernel; cubin size and an
FNV-1a hash (same hash: the option changed nothing). Prints a markdown table.
Run with CUDA_CACHE_DISABLE=1, or the driver's cache answers instead.

    python3 bench/gpu/jit_options.py k128_causal.ptx k160_none.ptx
(bench/gpu/run-device.sh jit-options makes the PTX and runs this.)
"""
import ctypes
import os
import sys
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
CU_JIT_OPTIMIZATION_LEVEL = 7
CU_JIT_FAST_COMPILE = 16
CU_JIT_INPUT_PTX = 1
CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
OPTIONS = [("default", None), ("FAST_COMPILE=1", (CU_JIT_FAST_COMPILE, 1)),
           ("level 3", (CU_JIT_OPTIMIZATION_LEVEL, 3)),
           ("level 2", (CU_JIT_OPTIMIZATION_LEVEL, 2)),
           ("level 1", (CU_JIT_OPTIMIZATION_LEVEL, 1))]

cu = ctypes.CDLL("libcuda.so.1")


def ok(result, what):
    if result != 0:
        raise SystemExit(f"{what} failed: CUresult {result}")


def link(ptx, option):
    state = ctypes.c_void_p()
    start = time.perf_counter()
    if option is None:
        ok(cu.cuLinkCreate_v2(0, None, None, ctypes.byref(state)), "cuLinkCreate")
    else:
        keys = (ctypes.c_int * 1)(option[0])
        values = (ctypes.c_void_p * 1)(option[1])
        ok(cu.cuLinkCreate_v2(1, keys, values, ctypes.byref(state)), "cuLinkCreate")
    buf = ctypes.create_string_buffer(ptx)
    ok(cu.cuLinkAddData_v2(state, CU_JIT_INPUT_PTX, buf, len(ptx) + 1, b"k", 0,
                           None, None), "cuLinkAddData")
    cubin, size = ctypes.c_void_p(), ctypes.c_size_t()
    ok(cu.cuLinkComplete(state, ctypes.byref(cubin), ctypes.byref(size)),
       "cuLinkComplete")
    ms = (time.perf_counter() - start) * 1e3
    data = ctypes.string_at(cubin, size.value)
    cu.cuLinkDestroy(state)
    return ms, data


def kernel_facts(ptx, cubin):
    module, fn = ctypes.c_void_p(), ctypes.c_void_p()
    ok(cu.cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
    name = ptx.split(b".entry ")[1].split(b"(")[0].strip()
    ok(cu.cuModuleGetFunction(ctypes.byref(fn), module, name), "cuModuleGetFunction")
    regs, local = ctypes.c_int(), ctypes.c_int()
    cu.cuFuncGetAttribute(ctypes.byref(regs), CU_FUNC_ATTRIBUTE_NUM_REGS, fn)
    cu.cuFuncGetAttribute(ctypes.byref(local), CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn)
    cu.cuModuleUnload(module)
    return regs.value, local.value


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return f"{h:016x}"


def main(paths):
    ok(cu.cuInit(0), "cuInit")
    device, context = ctypes.c_int(), ctypes.c_void_p()
    ok(cu.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
    ok(cu.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
    ok(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    print(f"driver JIT, best of {ROUNDS} (ms), registers, local bytes, cubin bytes, hash")
    print("| PTX | option | ms | regs | local B | cubin B | fnv1a |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        ptx = open(path, "rb").read()
        link(ptx, None)  # the process's first JIT loads the compiler
        for label, option in OPTIONS:
            best, data = min(link(ptx, option) for _ in range(ROUNDS))
            regs, local = kernel_facts(ptx, data)
            print(f"| {os.path.basename(path)} | {label} | {best:.1f} | {regs} | {local} "
                  f"| {len(data)} | {fnv1a(data)} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
