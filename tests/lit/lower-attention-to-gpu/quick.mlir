// RUN: flashjit-opt %s --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
//
// Each case's checks fail on its kernel without what they check: the same
// CHECKs against the file with that kernel changed.
// RUN: sed -e '/@quick /s/, quick = true//' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@quick_one_bit /s/, quick = true//' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// The quick form of d=192 causal (128x128, 8 warps of one m16 tile, one
// stage): each K/V tile is visited in 16-key slices by two run-time loops.
// Pass 1 computes a slice's scores (Q K^T as a run-time loop of 3 x 4
// k-steps, one swizzle group of 3 bits an iteration, over two key tiles: 8
// MMAs an iteration) and folds its row maxima into
// the running ones; pass 2 computes the scores again, their exponentials,
// the row sums (one slice's tree, added to the running sum) and P V (24
// column tiles: 24 MMAs). Then l = l * alpha + sum, and the next K and V
// load, in run-time loops, once both passes are done with this tile's.
// CHECK: #[[NOUNROLL:.*]] = #llvm.loop_unroll<disable = true>
// CHECK: #[[ANNOTATION:.*]] = #llvm.loop_annotation<unroll = #[[NOUNROLL]]>
// CHECK-LABEL: gpu.func @quick
// CHECK: scf.for {{.*}} step %c1 iter_args
// CHECK: gpu.barrier
// Pass 1.
// CHECK: %{{.*}}:2 = scf.for %{{.*}} = %c0 to %c128 step %c16 iter_args
// CHECK: %{{.*}}:8 = scf.for %{{.*}} = %c0 to %c192 step %c64 iter_args
// CHECK-COUNT-8: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// CHECK: scf.if
// CHECK-NOT: nvvm.mma.sync
// CHECK: arith.maximumf
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// The row maxima across the quad, alpha.
// CHECK: gpu.shuffle xor
// CHECK: math.exp2
// Pass 2: O (96 values) and the two row sums.
// CHECK: %[[PASS2:.*]]:98 = scf.for %{{.*}} = %c0 to %c128 step %c16 iter_args
// CHECK: %{{.*}}:8 = scf.for %{{.*}} = %c0 to %c192 step %c64 iter_args
// CHECK-COUNT-8: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// CHECK: scf.if
// CHECK: math.exp2
// CHECK: arith.addf
// CHECK: arith.addf
// CHECK: arith.addf
// CHECK: arith.addf %{{.*}}, %{{.*}} : f32
// CHECK-COUNT-24: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// CHECK: math.fma %{{.*}}, %{{.*}}, %[[PASS2]]#96
// CHECK: math.fma %{{.*}}, %{{.*}}, %[[PASS2]]#97
// CHECK: gpu.barrier
// CHECK: scf.for %{{.*}} = %c0 to %c128 step %c10 {
// CHECK: nvgpu.device_async_copy
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// CHECK: scf.for %{{.*}} = %c0 to %c128 step %c10 {
// CHECK: nvgpu.device_async_copy
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
flashjit.attention_fwd @quick arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 192, head_dim_v = 192, mask = "causal", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 128, warps = 8, stages = 1, quick = true>

// -----

// d=80 rows have one swizzle bit (groups of two 16-byte chunks, one k-step):
// Q K^T's loop takes a k-step an iteration. The config's 4 warps of two m16
// tiles become 8 warps of one (256 threads): 1 m16 tile x 2 key tiles.
// CHECK-LABEL: gpu.func @quick_one_bit
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK: scf.for %{{.*}} = %c0 to %c{{[0-9]+}} step %c16 iter_args
// CHECK: %{{.*}}:8 = scf.for %{{.*}} = %c0 to %c80 step %c16 iter_args
// CHECK-COUNT-2: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: } {loop_annotation
flashjit.attention_fwd @quick_one_bit arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 80, head_dim_v = 80, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2, quick = true>
