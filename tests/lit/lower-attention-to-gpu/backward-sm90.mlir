// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm90 --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
// Rows off 16-byte alignment take the copying form:
// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm90 --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s --check-prefix=COPIED
// The sm80 family's backward of the same specs has none of it:
// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s --check-prefix=COPIED

// The sm90 backward's main kernel: two warpgroups of 64 keys (256 threads),
// Q, K, V and dO by TMA (four __grid_constant__ maps after the backward's
// arguments; one mbarrier for K and V, one per stage for Q and dO) into
// 64-column boxes of 128-byte rows (wgmma's swizzled layout); per 32-query
// sub-step S^T from shared memory (K-major A and B), P^T by exp2, dV +=
// P^T dO with A from registers and dO MN-major (trans-b 1), dP^T, dK +=
// dS^T Q; then dS whole in shared memory and dQ = dS K with K MN-major,
// stored as float32 rows (after the previous step's bulk adds read them)
// and added into the workspace by bulk reductions, no float atomics. The
// preprocess and dQ conversion entries are the shared ones.
// CHECK-LABEL: gpu.func @bwd_pre
// CHECK-LABEL: gpu.func @bwd(
// CHECK-SAME: %arg64: !llvm.ptr, %arg65: !llvm.ptr, %arg66: !llvm.ptr, %arg67: !llvm.ptr)
// CHECK-SAME: flashjit.grid_constant_args = array<i32: 64, 65, 66, 67>, known_block_size = array<i32: 256, 1, 1>
// CHECK-COUNT-3: nvgpu.mbarrier.init
// CHECK: nvgpu.tma.async.load {{.*}} <tensor = memref<1x1x128x64xbf16
// CHECK: nvgpu.tma.async.load {{.*}} <tensor = memref<1x1x64x64xbf16
// CHECK: nvgpu.mbarrier.try_wait.parity
// CHECK: nvgpu.mbarrier.try_wait.parity
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
// CHECK: nvvm.cp.async.bulk.wait_group 0 {read}
// CHECK: vector.store {{.*}} vector<2xf32>
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK: cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32
// CHECK-NOT: memref.atomic_rmw
// CHECK: nvvm.cp.async.bulk.wait_group 0
// CHECK-NOT: {read}
// CHECK-LABEL: gpu.func @bwd_dq
flashjit.attention_fwd @bwd arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8, direction = "backward">

// Rows off 16-byte alignment (d = 36, 4-byte rows): no maps, every thread
// copies with cp.async and fences its copies for the async proxy; dQ still
// by bulk reductions.
// COPIED-LABEL: gpu.func @copied(
// COPIED-NOT: !llvm.ptr
// COPIED-SAME: known_block_size = array<i32: 256, 1, 1>
// COPIED-NOT: nvgpu.tma.async.load
// COPIED: nvgpu.device_async_copy {{.*}} to memref<1x128x64xf16
// COPIED: nvgpu.device_async_copy {{.*}} to memref<2x1x64x64xf16
// COPIED-NOT: nvgpu.tma.async.load
// COPIED: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// COPIED-NEXT: gpu.barrier
// COPIED: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 32, k = 16>
// COPIED: cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32
// COPIED-LABEL: gpu.func @copied_dq
flashjit.attention_fwd @copied arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 36, head_dim_v = 36, mask = "none", gqa_group = 1, lse = true, align = 2, direction = "backward">
