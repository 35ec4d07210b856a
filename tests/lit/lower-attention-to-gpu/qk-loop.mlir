// RUN: flashjit-opt %s --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
//
// Each case's checks fail on its kernel without what they check: the same
// CHECKs against the file with that kernel changed.
// RUN: sed -e '/@qk_loop /s/mask = "causal"/mask = "none"/' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@qk_unrolled /s/mask = "none"/mask = "causal"/' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// d=128 causal (128x64, 4 warps of two m16 tiles, padded rows, Q read from
// shared memory): Q K^T's 8 k-steps run as a run-time loop of 2 iterations
// of 4 unrolled k-steps (16 MMAs each: 2 m-tiles x 8 key tiles), over
// columns 0-127 in steps of 64, carrying the 64 scores. LLVM may not unroll it.
// CHECK: #[[NOUNROLL:.*]] = #llvm.loop_unroll<disable = true>
// CHECK: #[[ANNOTATION:.*]] = #llvm.loop_annotation<unroll = #[[NOUNROLL]]>
// CHECK-LABEL: gpu.func @qk_loop
// CHECK: scf.for {{.*}} iter_args
// CHECK: %{{.*}}:64 = scf.for %[[COL:.*]] = %c0 to %c128 step %c64 iter_args
// CHECK-COUNT-64: nvvm.mma.sync
// CHECK: scf.yield
// CHECK-NEXT: } {loop_annotation = #[[ANNOTATION]]}
// After the loop: the softmax, then P V (the k-steps are all in the loop).
// CHECK-NOT: nvvm.mma.sync
// CHECK: math.exp2
// CHECK: nvvm.mma.sync
flashjit.attention_fwd @qk_loop arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "causal", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 1>

// -----

// Swizzled rows (d=128 without a mask) keep Q K^T unrolled: in the loop
// ptxas spilled.
// CHECK-LABEL: gpu.func @qk_unrolled
// CHECK: scf.for {{.*}} iter_args
// CHECK-NOT: scf.for
// CHECK-COUNT-128: nvvm.mma.sync
// CHECK-NOT: scf.for
// CHECK: math.exp2
flashjit.attention_fwd @qk_unrolled arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>
