// RUN: flashjit-opt %s -split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
// The same checks fail on the sm80 family's kernel of the same spec:
// RUN: flashjit-opt %s -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// Overlap and pingpong add their own ops; the default kernel at d=72 has
// neither (overlap is the default to d=64 and from d=80, pingpong from
// d=96):
// RUN: flashjit-opt %s -split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s --check-prefix=PLAIN
// RUN: flashjit-opt %s -split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s --check-prefix=VARIANTS

// The sm90 family on sm_90a (TMA-addressable rows: align 8): one extern
// 1024-byte aligned shared window, tensor maps after ForwardKernelArgs (as
// !llvm.ptr, marked for byval), a producer warpgroup and two consumers.
// CHECK-LABEL: gpu.module @d128
// CHECK: memref.global "public" @__flashjit_smem : memref<0xi8, #gpu.address_space<workgroup>> {alignment = 1024 : i64}
// CHECK: gpu.func @d128(
// CHECK-SAME: %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr) kernel
// CHECK-SAME: flashjit.grid_constant_args = array<i32: 34, 35, 36>
// CHECK-SAME: known_block_size = array<i32: 384, 1, 1>
// Thread 0 initialises the full/empty barriers (Q; K full, empty; V full,
// empty per stage: 9), fenced for the async proxy.
// CHECK: nvgpu.mbarrier.init %{{.*}}[%c0], %c1 : <memorySpace = #gpu.address_space<workgroup>, num_barriers = 9>
// CHECK: nvgpu.mbarrier.init %{{.*}}, %c256
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// Producer: gives its registers away, loads Q (two 64-column boxes per
// consumer, 32 KiB) and per tile K then V (160 rows x 2 boxes, 40 KiB)
// after their empty barriers.
// CHECK: nvvm.setmaxregister decrease 24
// CHECK: nvgpu.mbarrier.arrive.expect_tx %{{.*}}[%c0], %c32768
// CHECK: nvgpu.tma.async.load {{.*}} : <tensor = memref<1x1x64x64xbf16, #gpu.address_space<workgroup>>, swizzle = swizzle_128b
// CHECK: nvgpu.mbarrier.try_wait.parity
// CHECK: nvgpu.mbarrier.arrive.expect_tx %{{.*}}, %c40960
// CHECK: nvgpu.tma.async.load {{.*}} : <tensor = memref<1x1x160x64xbf16, #gpu.address_space<workgroup>>, swizzle = swizzle_128b
// Consumers: take the registers, wait for Q, and per tile S = Q K^T (8 k16
// steps of m64n160k16 from shared memory, the first zeroing D), then
// O += P V with P from registers (inline PTX, trans-b 1).
// CHECK: nvvm.setmaxregister increase 240
// CHECK: nvvm.wgmma.fence.aligned
// CHECK: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 160, k = 16>, D[<f32>, <zero>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK-COUNT-7: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 160, k = 16>, D[<f32>, <one>]
// CHECK: nvvm.wgmma.commit.group.sync.aligned
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: nvgpu.mbarrier.arrive
// CHECK: llvm.inline_asm has_side_effects asm_dialect = att "{ .reg .pred p; setp.ne.b32 p, 1, 0; wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 1;
// The default at d=128 takes turns between its consumers and overlaps the
// next tile's S with this tile's P V (retiring S first):
// CHECK: nvvm.barrier.arrive id = %{{.*}} number_of_threads = %c256_i32
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
flashjit.attention_fwd @d128 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "causal", gqa_group = 1, lse = true, align = 8>

// -----

// PLAIN-LABEL: gpu.module @d72
// PLAIN-NOT: nvvm.wgmma.wait.group.sync.aligned 1
// PLAIN-NOT: nvvm.barrier.arrive
// PLAIN: gpu.return
flashjit.attention_fwd @d72 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 72, head_dim_v = 72, mask = "causal", gqa_group = 1, lse = true, align = 8>

// -----

// Overlap: the next tile's S and this tile's P V in flight together, S
// retired first (wait for all but one group). Pingpong: named barriers 2
// and 3 of 256 threads, a warpgroup waits on its own and arrives on the
// other's.
// VARIANTS-LABEL: gpu.module @variants
// VARIANTS: nvvm.barrier.arrive id = %{{.*}} number_of_threads = %c256_i32
// VARIANTS: nvvm.barrier id = %{{.*}} number_of_threads = %c256_i32
// VARIANTS: nvvm.wgmma.wait.group.sync.aligned 1
// VARIANTS: nvvm.wgmma.wait.group.sync.aligned 0
flashjit.attention_fwd @variants arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 128, warps = 8, stages = 2, family = "sm90", pingpong = true, overlap = true>
