// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm90 --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
// The sm80 family's backward of the same spec has none of it:
// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// The sm90 backward's main kernel: two warpgroups of 64 keys (256 threads),
// tiles copied by cp.async into 64-column boxes of 128-byte rows (wgmma's
// swizzled layout) and fenced for the async proxy before the barrier;
// per 32-query sub-step S^T from shared memory (K-major A and B), P^T by
// exp2, dV += P^T dO with A from registers and dO MN-major (trans-b 1),
// dP^T, dK += dS^T Q; then dS whole in shared memory and dQ = dS K with K
// MN-major, added by float32 atomics. The preprocess and dQ conversion entries
// are the shared ones.
// CHECK-LABEL: gpu.func @bwd_pre
// CHECK-LABEL: gpu.func @bwd(
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK: nvgpu.device_async_copy {{.*}} to memref<1x128x64xbf16
// CHECK: nvgpu.device_async_copy {{.*}} to memref<2x1x64x64xbf16
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 32, k = 16>, D[<f32>, <zero>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: math.exp2
// CHECK: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 1;
// CHECK: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 32, k = 16>
// CHECK: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 1;
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 64, k = 16>, D[<f32>, <zero>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <row>]
// CHECK: memref.atomic_rmw addf
// CHECK-LABEL: gpu.func @bwd_dq
flashjit.attention_fwd @bwd arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8, direction = "backward">
