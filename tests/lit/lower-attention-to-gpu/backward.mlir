// RUN: flashjit-opt %s --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | FileCheck %s

// A backward spec lowers to the module's three entries: D = rowsum(dO * O)
// with the LSE into the log2 domain (+inf for empty rows) and the dQ sums
// zeroed; the main kernel over key tiles (K, V into shared memory) with P
// recomputed by exp2 and dQ added atomically; the dQ conversion. The
// scalar main kernel (scalar = true) multiplies in float32 FMA loops.
// CHECK-LABEL: gpu.func @bwd_pre
// CHECK: arith.cmpf oeq
// CHECK: arith.select
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @bwd(
// CHECK: gpu.dynamic_shared_memory
// CHECK: scf.for
// CHECK: gpu.barrier
// CHECK: scf.for {{.*}} -> (f32)
// CHECK: math.fma
// CHECK: math.exp2
// CHECK: memref.atomic_rmw addf
// CHECK: arith.truncf
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @bwd_dq
// CHECK: arith.truncf
// CHECK: gpu.return
flashjit.attention_fwd @bwd arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 4, lse = true, align = 4, direction = "backward"> config = #flashjit.tile<block_m = 16, block_n = 32, warps = 4, stages = 1, scalar = true>

// -----

// Deterministic: dQ partial sums added without atomics.
// CHECK-LABEL: gpu.func @det(
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @det_dq
flashjit.attention_fwd @det arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 192, head_dim_v = 128, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward", deterministic = true> config = #flashjit.tile<block_m = 16, block_n = 16, warps = 4, stages = 1, scalar = true>

// -----

// The mma.sync main kernel (the tile attribute without scalar): K and V,
// then Q and dO by cp.async into swizzled shared memory; S = Q K^T and dP =
// dO V^T from ldmatrix fragments on mma.sync m16n8k16; P by exp2; P and dS
// rounded into shared memory behind a barrier; dV += P^T dO, dK += dS^T Q
// and dQ = dS K from ldmatrix .trans fragments; dQ added atomically; dK
// and dV stored once per key tile. No float32 product loop: the only f32
// loop-carried values are the dK/dV accumulators of the step loop.
// CHECK-LABEL: gpu.func @mma(
// CHECK-NOT: -> (f32)
// CHECK: gpu.dynamic_shared_memory
// CHECK: nvgpu.device_async_copy
// CHECK: nvvm.cp.async.commit.group
// CHECK: scf.for {{.*}} -> (f32, f32,
// CHECK: nvvm.cp.async.wait.group 0
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix {{.*}}transpose = false
// CHECK: nvvm.mma.sync
// CHECK-SAME: <m = 16, n = 8, k = 16>
// CHECK: math.exp2
// CHECK: nvvm.mma.sync
// CHECK: vector.store {{.*}} vector<2xbf16>
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix {{.*}}transpose = true
// CHECK: nvvm.mma.sync
// CHECK: memref.atomic_rmw addf
// CHECK-NOT: -> (f32)
// CHECK: gpu.return
// CHECK-LABEL: gpu.func @mma_dq
flashjit.attention_fwd @mma arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 4, lse = true, align = 4, direction = "backward"> config = #flashjit.tile<block_m = 64, block_n = 64, warps = 8, stages = 2>

// -----

// Deterministic mma.sync: plain adds into the CTA's own dQ partial sum.
// CHECK-LABEL: gpu.func @mmadet(
// CHECK: nvvm.mma.sync
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return
flashjit.attention_fwd @mmadet arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 192, head_dim_v = 128, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward", deterministic = true> config = #flashjit.tile<block_m = 64, block_n = 64, warps = 8, stages = 2>
