// RUN: flashjit-opt %s -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
//
// Each case's checks fail on its kernel without what they check: the same
// CHECKs against the file with that kernel changed.
// RUN: sed -e '/@d192 /s/head_dim_qk = 192, head_dim_v = 192/head_dim_qk = 176, head_dim_v = 176/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@d96 /s/mask = "none"/mask = "causal"/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@d96causal /s/mask = "causal"/mask = "none"/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// head_dim 192 (24 sixteen-byte chunks a row), 64x64 tiles of 4 warps:
// rows are not padded and chunk c of row r sits at chunk c ^ (r & 7) (3
// swizzle bits). A copy lane (5 rows a round) XORs its column with 8 x
// (row & 7): in the Q copy's run-time loop the row is lane row + first; in
// the main loop's unrolled K copy the round starting at row 5 swizzles by
// the (opaque) lane row + 5.
// CHECK-LABEL: gpu.func @d192
// CHECK: memref.view {{.*}} to memref<64x192xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<1x64x192xbf16, #gpu.address_space<workgroup>>
// CHECK: %[[LANEROW:.*]] = arith.divui %thread_id_x, %c24 : index
// CHECK-NEXT: %[[CHUNK:.*]] = arith.remui %thread_id_x, %c24 : index
// CHECK-NEXT: %[[COL:.*]] = arith.muli %[[CHUNK]], %c8 : index
// CHECK-NEXT: scf.for %[[FIRST:.*]] = %c0 to %c64 step %c5 {
// CHECK-NEXT: %[[ROW:.*]] = arith.addi %[[LANEROW]], %[[FIRST]] : index
// CHECK: %[[SWZ:.*]] = arith.andi %[[ROW]], %c7 : index
// CHECK-NEXT: %[[SHIFT:.*]] = arith.muli %[[SWZ]], %c8 : index
// CHECK-NEXT: arith.xori %[[COL]], %[[SHIFT]] : index
// CHECK: llvm.inline_asm has_side_effects "mov.b32 $0, $1;", "=r,r"
// CHECK-NEXT: %[[KROW:.*]] = arith.index_cast
// CHECK: arith.andi %[[KROW]], %c7 : index
// CHECK: %[[KROW5:.*]] = arith.addi %[[KROW]], %c5 : index
// CHECK-NEXT: arith.andi %[[KROW5]], %c7 : index
// Q is re-read inside the loop through four views, one per 32-byte pair
// of each 128-byte group: the lane's pair swizzle ((r & 6) x 8, opaque)
// XORed with 0, 16, 32 and 48 elements.
// CHECK: memref.view {{.*}} to memref<64x192xbf16
// CHECK-NEXT: arith.xori %[[P:.*]], %c16 : index
// CHECK: memref.view {{.*}} to memref<64x192xbf16
// CHECK-NEXT: arith.xori %[[P]], %c32 : index
// CHECK: memref.view {{.*}} to memref<64x192xbf16
// CHECK-NEXT: arith.xori %[[P]], %c48 : index
// CHECK: memref.view {{.*}} to memref<64x192xbf16
// CHECK-NOT: memref.view {{.*}} to memref<64x192xbf16
// CHECK: nvgpu.ldmatrix
// CHECK: gpu.return
flashjit.attention_fwd @d192 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 192, head_dim_v = 192, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 64, block_n = 64, warps = 4, stages = 1>

// -----

// head_dim 96 (12 chunks: rows alternate between two bank-group halves),
// 4 warps of 32 rows without a mask: 2 swizzle bits, chunk c of row r at
// c ^ ((r >> 1) & 3).
// CHECK-LABEL: gpu.func @d96
// CHECK: memref.view {{.*}} to memref<128x96xbf16, #gpu.address_space<workgroup>>
// CHECK: %[[LANEROW:.*]] = arith.divui %thread_id_x, %c12 : index
// CHECK-NEXT: %[[CHUNK:.*]] = arith.remui %thread_id_x, %c12 : index
// CHECK-NEXT: %[[COL:.*]] = arith.muli %[[CHUNK]], %c8 : index
// CHECK-NEXT: scf.for %[[FIRST:.*]] = %c0 to %c128 step %c10 {
// CHECK-NEXT: %[[ROW:.*]] = arith.addi %[[LANEROW]], %[[FIRST]] : index
// CHECK: %[[HALF:.*]] = arith.shrui %[[ROW]], %c1 : index
// CHECK-NEXT: %[[SWZ:.*]] = arith.andi %[[HALF]], %c3 : index
// CHECK-NEXT: %[[SHIFT:.*]] = arith.muli %[[SWZ]], %c8 : index
// CHECK-NEXT: arith.xori %[[COL]], %[[SHIFT]] : index
// CHECK: gpu.return
flashjit.attention_fwd @d96 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 96, head_dim_v = 96, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// The same tile with a causal mask keeps padded rows (96 + 8) and no
// swizzle: there the swizzle's registers make ptxas spill.
// CHECK-LABEL: gpu.func @d96causal
// CHECK: memref.view {{.*}} to memref<128x104xbf16, #gpu.address_space<workgroup>>
// CHECK-NOT: arith.xori
// CHECK: scf.for {{.*}} iter_args
// CHECK-NOT: arith.xori
// CHECK: gpu.return
flashjit.attention_fwd @d96causal arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 96, head_dim_v = 96, mask = "causal", gqa_group = 1, lse = true, align = 8>
