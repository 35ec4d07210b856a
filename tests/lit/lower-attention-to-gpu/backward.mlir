// RUN: flashjit-opt %s --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | FileCheck %s

// A backward spec lowers to the module's three entries: D = rowsum(dO * O)
// with the LSE into the log2 domain (+inf for empty rows) and the dQ sums
// zeroed; the main kernel over key tiles (K, V into shared memory) with P
// recomputed by exp2 and dQ added atomically; the dQ conversion.
// CHECK-LABEL: gpu.func @bwd_pre
// CHECK: arith.cmpf oeq
// CHECK: arith.select
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @bwd(
// CHECK: gpu.dynamic_shared_memory
// CHECK: scf.for
// CHECK: gpu.barrier
// CHECK: math.exp2
// CHECK: memref.atomic_rmw addf
// CHECK: arith.truncf
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @bwd_dq
// CHECK: arith.truncf
// CHECK: gpu.return
flashjit.attention_fwd @bwd arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 4, lse = true, align = 4, direction = "backward"> config = #flashjit.tile<block_m = 16, block_n = 32, warps = 4, stages = 1>

// -----

// Deterministic: dQ partial sums added without atomics.
// CHECK-LABEL: gpu.func @det(
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @det_dq
flashjit.attention_fwd @det arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 192, head_dim_v = 128, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward", deterministic = true> config = #flashjit.tile<block_m = 16, block_n = 16, warps = 4, stages = 1>
