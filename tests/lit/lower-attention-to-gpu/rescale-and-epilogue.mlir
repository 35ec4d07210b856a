// RUN: flashjit-opt %s --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
//
// Each case's checks fail on its kernel without what they check: the same
// CHECKs against the file with that kernel changed.
// RUN: sed -e '/@rescale_on_new_max /s/head_dim_qk = 100, head_dim_v = 100/head_dim_qk = 96, head_dim_v = 96/' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@rescale_on_new_max /s/align = 4/align = 2/' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@rescale_always /s/block_n = 64/block_n = 80/' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@direct_store /s/align = 2/align = 8/' %s | flashjit-opt --split-input-file --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// 128x64, 4 warps at head_dim 100: about 216 registers by the estimate, so O
// is rescaled in a branch of its own, taken when some row of the warp has a
// new maximum (a warp vote). O leaves through the warp's rows of the Q tile
// in 8-byte chunks (alignment 4 elements), in a run-time loop over the
// warp's 32 rows x 25 chunks, a chunk a lane, not unrolled.
// CHECK: #[[NOUNROLL:.*]] = #llvm.loop_unroll<disable = true>
// CHECK: #[[ANNOTATION:.*]] = #llvm.loop_annotation<unroll = #[[NOUNROLL]]>
// CHECK-LABEL: gpu.func @rescale_on_new_max
// CHECK: scf.for {{.*}} iter_args
// CHECK: arith.cmpf ogt
// CHECK: %[[MOVED:.*]] = nvvm.vote.sync{{ +}}any %{{.*}}, %{{.*}} -> i1
// CHECK: scf.if %[[MOVED]] -> (f32, f32, f32, f32
// CHECK: arith.mulf
// CHECK: } else {
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true}
// CHECK: scf.yield
// CHECK: nvvm.bar.warp.sync
// 1 / l by the approximate reciprocal (the IEEE one is a slow path in ptxas).
// CHECK-NOT: arith.divf
// CHECK: nvvm.rcp.approx.ftz.f
// CHECK: vector.store {{.*}} : memref<128x120xbf16, #gpu.address_space<workgroup>>, vector<2xbf16>
// CHECK: nvvm.bar.warp.sync
// CHECK: scf.for %{{.*}} = %{{.*}} to %c800 step %c32 {
// CHECK: vector.load {{.*}} : memref<128x120xbf16, #gpu.address_space<workgroup>>, vector<4xbf16>
// CHECK: vector.store {{.*}} : memref<1099511627776xbf16, 1>, vector<4xbf16>
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// CHECK-NEXT: gpu.return
flashjit.attention_fwd @rescale_on_new_max arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 1, lse = true, align = 4> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>

// -----

// 128x64, 4 warps at head_dim 96: 200 registers by the estimate; the
// rescale stays next to the softmax, unconditional. 16-byte chunks out.
// CHECK-LABEL: gpu.func @rescale_always
// CHECK: scf.for {{.*}} iter_args
// CHECK-NOT: nvvm.vote.sync
// CHECK: vector.load {{.*}} vector<8xbf16>
// CHECK: gpu.return
flashjit.attention_fwd @rescale_always arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 96, head_dim_v = 96, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>

// -----

// 4-byte copies (alignment 2): O is stored from the fragments, no staging.
// CHECK-LABEL: gpu.func @direct_store
// CHECK: scf.yield
// CHECK-NOT: nvvm.bar.warp.sync
// CHECK: vector.store {{.*}} : memref<1099511627776xbf16, 1>, vector<2xbf16>
// CHECK: gpu.return
flashjit.attention_fwd @direct_store arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 2> config = #flashjit.tile<block_m = 128, block_n = 32, warps = 8, stages = 2>
