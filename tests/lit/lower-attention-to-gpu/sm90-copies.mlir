// RUN: flashjit-opt %s --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
// The same head dim with 16-byte aligned rows loads by TMA, none of it:
// RUN: sed -e 's/align = 4/align = 8/' %s | flashjit-opt --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// d=100 heads 200 bytes apart: TMA refuses a box whose first column is not
// 16-byte aligned, so the producer warpgroup copies every tile by cp.async
// (8 bytes, zeros past the head dim and the keys) and each thread arrives
// on the full barrier as its copies land (128 arrivals, no expect_tx);
// consumers fence for the async proxy before wgmma reads the tile.
// CHECK-LABEL: gpu.func @copies
// CHECK-NOT: !llvm.ptr
// CHECK-SAME: kernel
// CHECK: nvgpu.mbarrier.init %{{.*}}[%c0], %c128
// CHECK: nvgpu.mbarrier.init %{{.*}}[%c1], %c128
// CHECK: nvgpu.mbarrier.init %{{.*}}[%c3], %c256
// Producer: more registers than a TMA thread's 24, Q's boxes, its arrival.
// CHECK: nvvm.setmaxregister decrease 40
// CHECK: nvgpu.device_async_copy %arg0[%{{.*}}], %{{.*}}[%c0, %{{.*}}, %{{.*}}], 4, %{{.*}} : memref<{{.*}}xbf16, 1> to memref<4x64x64xbf16
// CHECK: nvvm.cp.async.mbarrier.arrive %{{.*}} {noinc = true} : !llvm.ptr<3>
// The first K/V tile (it may cross seqlen_k): K after K empty, its arrival.
// CHECK: nvgpu.mbarrier.try_wait.parity %{{.*}}[%c3]
// CHECK: nvgpu.device_async_copy %arg1[%{{.*}}], %{{.*}}[%c0, %{{.*}}, %{{.*}}], 4, %{{.*}} : memref<{{.*}}xbf16, 1> to memref<4x128x64xbf16
// CHECK: nvvm.cp.async.mbarrier.arrive %{{.*}} {noinc = true}
// CHECK: nvgpu.device_async_copy %arg2[
// CHECK: nvvm.cp.async.mbarrier.arrive %{{.*}} {noinc = true}
// Consumers: Q, then each K tile, waited for and fenced before the wgmma.
// CHECK: nvvm.setmaxregister increase 232
// CHECK: nvgpu.mbarrier.try_wait.parity %{{.*}}[%c0]
// CHECK-NEXT: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK: nvgpu.mbarrier.try_wait.parity
// CHECK-NEXT: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK: nvvm.wgmma.mma_async
// CHECK-NOT: nvgpu.tma.async.load
flashjit.attention_fwd @copies arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 1, lse = true, align = 4> config = #flashjit.tile<block_m = 128, block_n = 128, warps = 8, stages = 2, family = "sm90", pingpong = true>
