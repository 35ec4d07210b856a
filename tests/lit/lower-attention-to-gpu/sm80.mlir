// RUN: flashjit-opt %s --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
//
// Each case's checks fail on its kernel without what they check: the same
// CHECKs against the file with that kernel changed.
// RUN: sed -e 's/lse = true/lse = false/' %s | flashjit-opt --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e 's/warps = 8/warps = 4/' %s | flashjit-opt --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e 's/head_dim_qk = 72, head_dim_v = 72/head_dim_qk = 64, head_dim_v = 64/' %s | flashjit-opt --flashjit-select-tile-config --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// head_dim 72 (padded to 80 in smem), block 128 x 64, 8 warps: one m16 tile
// per warp, so swizzled rows of 80 (10 sixteen-byte chunks, 2 mod 4: one
// swizzle bit, rows 4-7 of every 8 swap chunk pairs).
// Copies outside the main loop are run-time loops that LLVM may not unroll.
// CHECK: #[[NOUNROLL:.*]] = #llvm.loop_unroll<disable = true>
// CHECK: #[[ANNOTATION:.*]] = #llvm.loop_annotation<unroll = #[[NOUNROLL]]>
// CHECK: module attributes {gpu.container_module}
// CHECK: gpu.module @k72 [#nvvm.target<O = 3, chip = "sm_90a", features = "+ptx80">]
// CHECK: gpu.func @k72(%{{.*}}: memref<1099511627776xbf16, 1>, %{{.*}}: memref<1099511627776xbf16, 1>, %{{.*}}: memref<1099511627776xbf16, 1>, %{{.*}}: memref<1099511627776xbf16, 1>, %{{.*}}: memref<1099511627776xf32, 1>,
// CHECK-SAME: i64, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: f32, %{{.*}}: f32) kernel
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK-SAME: nvvm.minctasm = 1
// CHECK: gpu.dynamic_shared_memory
// CHECK: memref.view {{.*}} to memref<128x80xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<2x64x80xbf16, #gpu.address_space<workgroup>>
// The Q tile in rounds of 25 rows (10 chunks a row, 256 threads: 6 idle); a
// copy lane's shared-memory column is its column XOR 8 x bit 2 of its row.
// CHECK: %[[LANEROW:.*]] = arith.divui %thread_id_x, %c10 : index
// CHECK-NEXT: %[[LANECHUNK:.*]] = arith.remui %thread_id_x, %c10 : index
// CHECK-NEXT: %[[LANECOL:.*]] = arith.muli %[[LANECHUNK]], %c8 : index
// CHECK-NEXT: scf.for %[[FIRST:.*]] = %c0 to %c128 step %c25 {
// CHECK-NEXT: %[[ROW:.*]] = arith.addi %[[LANEROW]], %[[FIRST]] : index
// CHECK-NEXT: arith.cmpi slt, %[[ROW]], %c128 : index
// CHECK-NEXT: arith.cmpi slt, %[[LANEROW]], %c25 : index
// CHECK: %[[ROWBIT:.*]] = arith.shrui %[[ROW]], %c2 : index
// CHECK-NEXT: %[[BIT:.*]] = arith.andi %[[ROWBIT]], %c1 : index
// CHECK-NEXT: %[[FLIP:.*]] = arith.muli %[[BIT]], %c8 : index
// CHECK-NEXT: %[[SCOL:.*]] = arith.xori %[[LANECOL]], %[[FLIP]] : index
// Q tile: 16-byte cp.async with zero-fill of rows/columns out of range.
// CHECK: nvgpu.device_async_copy {{.*}}[%[[ROW]], %[[SCOL]]], 8, %{{.*}} {bypassL1}
// CHECK: } {loop_annotation = #[[ANNOTATION]]}
// CHECK: nvvm.cp.async.commit.group
// CHECK: nvvm.cp.async.wait.group 1
// CHECK: gpu.barrier
// Q fragments kept in registers: 5 k-steps of 16 over the padded head.
// CHECK-COUNT-5: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false}
// CHECK: scf.for {{.*}} iter_args
// CHECK: nvvm.cp.async.wait.group 0
// S = Q K^T, the causal / seqlen mask only on boundary tiles, exp2 softmax.
// The MMA takes bf16 pairs as i32 registers and the accumulators as scalars.
// CHECK: nvvm.mma.sync A[{{.*}}, {{.*}}, {{.*}}, {{.*}}]  B[{{.*}}, {{.*}}]  C[{{.*}}, {{.*}}, {{.*}}, {{.*}}]  {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK-NOT: vector<2x2xf32>
// CHECK: scf.if
// CHECK: gpu.shuffle  xor
// CHECK: math.exp2
// V through ldmatrix.trans; 72 = 9 n8-tiles: four x4 loads and one x2.
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true}
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 2 : i32, transpose = true}
// CHECK: scf.yield
// Epilogue: LSE with log2, masked stores.
// CHECK: math.log2
// CHECK: vector.store
// CHECK: gpu.return
flashjit.attention_fwd @k72 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 72, head_dim_v = 72, mask = "causal", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2>
