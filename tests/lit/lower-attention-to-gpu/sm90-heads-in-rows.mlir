// RUN: flashjit-opt %s --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
// The same head dim with 16-byte aligned heads has none of it:
// RUN: sed -e 's/align = 4, heads_in_rows = true/align = 8/' %s | flashjit-opt --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// d=100 heads 200 bytes apart in 16-byte aligned rows (heads_in_rows): TMA
// loads a head as columns of its row, and the columns wgmma reads past the
// head (100..111: the next head's values) are zeroed in shared memory.
// Barriers 9 and 10: K ready per stage, after the 96 threads of the
// producer's warps 1-3.
// CHECK-LABEL: gpu.module @rows
// CHECK: num_barriers = 11
// CHECK: nvgpu.mbarrier.init %{{.*}}[%c9], %c96
// CHECK: nvgpu.mbarrier.init %{{.*}}[%c10], %c96
// Producer: the head's coordinate is 0, its columns start at head * stride.
// CHECK: nvvm.setmaxregister decrease 24
// CHECK: nvgpu.tma.async.load %{{.*}}[%{{.*}}, %{{.*}}, %c0, %{{.*}}]
// Warps 1-3, per K tile once it has landed: columns 100-103 (8 bytes in
// 16-byte chunk 4 of the second box) and 104-111 (chunk 5), swizzled by
// the row, then a fence for the async proxy and K ready.
// CHECK: arith.subi %thread_id_x, %c32
// CHECK: nvgpu.mbarrier.try_wait.parity
// CHECK: arith.xori %{{.*}}, %c4
// CHECK: vector.store {{.*}} vector<8xi8>
// CHECK: arith.xori %{{.*}}, %c5
// CHECK: vector.store {{.*}} vector<16xi8>
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK: arith.addi %{{.*}}, %c9
// CHECK-NEXT: nvgpu.mbarrier.arrive
// Consumers: Q's pad columns, a fence, every consumer past them, and each
// tile's K waited for on K ready.
// CHECK: nvvm.setmaxregister increase
// CHECK: vector.store {{.*}} vector<8xi8>
// CHECK: vector.store {{.*}} vector<16xi8>
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>
// CHECK: nvvm.barrier id = %c1_i32 number_of_threads = %c256_i32
// CHECK: arith.addi %{{.*}}, %c9
// CHECK-NEXT: nvgpu.mbarrier.try_wait.parity
flashjit.attention_fwd @rows arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 1, lse = true, align = 4, heads_in_rows = true> config = #flashjit.tile<block_m = 128, block_n = 128, warps = 8, stages = 2, family = "sm90", pingpong = true>
