// RUN: flashjit-opt %s --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | FileCheck %s
//
// Each feature's checks fail on its kernel without the feature: the same
// CHECKs against the file with one kernel changed (the labels keep every
// other kernel's checks passing, so the failure is that kernel's).
// RUN: sed -e '/@window /s/mask = "window"/mask = "none"/' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@window /s/mask = "window"/mask = "causal"/' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@bias /s/, bias = "tensor"//' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@alibi /s/, bias = "alibi"//' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@softcap /s/, softcap = true//' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@varlen /s/varlen = true, //' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@varlen /s/, key_lengths = true//' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@varlen_causal /s/, varlen = true//' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@packed /s/, pack_gqa = true//' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s
// RUN: sed -e '/@causal_order /s/mask = "causal"/mask = "none"/' %s | flashjit-opt --flashjit-lower-attention-to-gpu --canonicalize --cse -split-input-file | not FileCheck %s

// Sliding window: the tile range ends at the last query's diagonal +
// window_right and starts at the first query's diagonal - window_left, and
// boundary tiles bound each row's keys by both edges (hi exclusive, lo
// inclusive, relative to the thread's first key column).
// CHECK-LABEL: gpu.func @window
// CHECK-SAME: %[[WL:[a-z0-9_]+]]: i32, %[[WR:[a-z0-9_]+]]: i32, %{{[a-z0-9_]+}}: f32, %{{[a-z0-9_]+}}: f32) kernel
// CHECK-DAG: %[[WLI:.*]] = arith.index_cast %[[WL]] : i32 to index
// CHECK-DAG: %[[WRI:.*]] = arith.index_cast %[[WR]] : i32 to index
// CHECK: arith.addi %{{.*}}, %[[WRI]] : index
// CHECK: arith.subi %{{.*}}, %[[WLI]] : index
// CHECK: scf.for {{.*}} iter_args
// CHECK: scf.if
// CHECK: %[[HI:.*]] = arith.addi %{{.*}}, %[[WRI]] : index
// CHECK: %[[LO:.*]] = arith.subi %{{.*}}, %[[WLI]] : index
// CHECK: arith.cmpi sgt, %{{.*}}, %c0_i32 : i32
// CHECK-NEXT: arith.cmpi sle, %{{.*}}, %c0_i32 : i32
// CHECK-NEXT: arith.andi
// CHECK-NOT: memref.load
// CHECK: gpu.return
flashjit.attention_fwd @window arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "window", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>

// -----

// Bias tensor: one dtype element per score, widened to f32 and added in the
// log2 domain (fma with log2(e)) before the row max.
// CHECK-LABEL: gpu.func @bias
// CHECK: scf.for {{.*}} iter_args
// CHECK: nvvm.mma.sync
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<1099511627776xf16, 1>
// CHECK: arith.extf %{{.*}} : f16 to f32
// CHECK: math.fma
// CHECK: gpu.shuffle  xor
flashjit.attention_fwd @bias arch = "sm_80" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, bias = "tensor"> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>

// -----

// ALiBi: slopes loaded once before the loop; |key - query - diag| as f32.
// CHECK-LABEL: gpu.func @alibi
// CHECK: memref.load %{{.*}} : memref<1099511627776xf32, 1>
// CHECK: scf.for {{.*}} iter_args
// CHECK: arith.sitofp
// CHECK-NOT: memref.load %{{.*}} : memref<1099511627776xf32, 1>
// CHECK: gpu.return
flashjit.attention_fwd @alibi arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 80, head_dim_v = 80, mask = "causal", gqa_group = 1, lse = true, align = 8, bias = "alibi"> config = #flashjit.tile<block_m = 128, block_n = 32, warps = 4, stages = 2>

// -----

// Softcap: tanh through exp2 and a fast division, per score.
// CHECK-LABEL: gpu.func @softcap
// CHECK: scf.for {{.*}} iter_args
// CHECK: nvvm.mma.sync
// CHECK: math.exp2
// CHECK: arith.divf {{.*}} fastmath<afn>
flashjit.attention_fwd @softcap arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "none", gqa_group = 1, lse = true, align = 8, softcap = true> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2>

// -----

// Varlen + key lengths: sequence starts (cu_seqlens_q: %arg7, cu_seqlens_k:
// %arg8) and lengths (key_lengths: %arg9) come from int32 arrays indexed by
// the batch (block z) before any copy. Without a causal mask the CTA's
// coordinates are its block ids.
// CHECK-LABEL: gpu.func @varlen
// CHECK-NOT: nctaid
// CHECK: %[[B:.*]] = gpu.block_id  z
// CHECK: memref.load %arg7[%[[B]]] : memref<1099511627776xi32, 1>
// CHECK: memref.load %arg8[%[[B]]] : memref<1099511627776xi32, 1>
// CHECK: memref.load %arg9[%[[B]]] : memref<1099511627776xi32, 1>
// CHECK: nvgpu.device_async_copy
flashjit.attention_fwd @varlen arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, varlen = true, key_lengths = true> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>

// -----

// Varlen with a causal mask: the CTA order remaps row blocks and heads only;
// the batch (ctaid.z, read fresh) indexes cu_seqlens_q (%arg7) and
// cu_seqlens_k (%arg8).
// CHECK-LABEL: gpu.func @varlen_causal
// CHECK: %[[Z:.*]] = llvm.inline_asm has_side_effects "mov.u32 $0, %ctaid.z;"
// CHECK-NEXT: %[[B:.*]] = arith.index_cast %[[Z]] : i32 to index
// CHECK: "llvm.intr.ctlz"
// CHECK: arith.divui
// CHECK: %[[NEXT:.*]] = arith.addi %[[B]], %c1 : index
// CHECK-NEXT: memref.load %arg7[%[[B]]] : memref<1099511627776xi32, 1>
// CHECK: memref.load %arg7[%[[NEXT]]] : memref<1099511627776xi32, 1>
// CHECK: memref.load %arg8[%[[B]]] : memref<1099511627776xi32, 1>
// CHECK: memref.load %arg8[%[[NEXT]]] : memref<1099511627776xi32, 1>
flashjit.attention_fwd @varlen_causal arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8, varlen = true> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>

// -----

// Packed GQA (group 4): a CTA's rows are seqlen_q rows of each of the 4
// query heads of K/V head y; in the Q copy, tile row r is query r / 4 of
// head 4 * y + r % 4. (Every kernel divides lanes by 4 for the MMA: the
// checks below name the rows they divide.)
// CHECK-LABEL: gpu.func @packed
// CHECK: %[[SQ:.*]] = arith.index_cast %arg28 : i32 to index
// CHECK: %[[ROWS:.*]] = arith.muli %[[SQ]], %c4 : index
// CHECK: arith.cmpi slt, %{{.*}}, %[[ROWS]] : index
// CHECK: scf.for
// CHECK: arith.cmpi slt, %[[R:[0-9]+]], %[[ROWS]] : index
// CHECK: %[[INGROUP:.*]] = arith.remui %[[R]], %c4 : index
// CHECK-NEXT: %[[FIRSTHEAD:.*]] = arith.muli %{{.*}}, %c4 : index
// CHECK-NEXT: arith.addi %[[FIRSTHEAD]], %[[INGROUP]] : index
// CHECK: arith.divui %[[R]], %c4 : index
flashjit.attention_fwd @packed arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 4, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2, pack_gqa = true>

// -----

// Causal CTAs run longest first: within a chunk of heads, row blocks from the
// last down, the chunk's heads fastest. A chunk is 2^(15 - ceil(log2
// seqlen_k)) heads here (32768 keys of 2 x 128 bf16 fill 16 MiB), the last
// chunk of a batch takes the remainder, and one division splits the index.
// CHECK-LABEL: gpu.func @causal_order
// CHECK: %[[X:.*]] = llvm.inline_asm has_side_effects "mov.u32 $0, %ctaid.x;"
// CHECK-NEXT: %[[XI:.*]] = arith.index_cast %[[X]] : i32 to index
// CHECK-NEXT: %[[Y:.*]] = llvm.inline_asm has_side_effects "mov.u32 $0, %ctaid.y;"
// CHECK-NEXT: %[[YI:.*]] = arith.index_cast %[[Y]] : i32 to index
// CHECK: %[[NX:.*]] = llvm.inline_asm has_side_effects "mov.u32 $0, %nctaid.x;"
// CHECK-NEXT: %[[ROWBLOCKS:.*]] = arith.index_cast %[[NX]] : i32 to index
// CHECK: %[[CLZ:.*]] = "llvm.intr.ctlz"
// CHECK-NEXT: %[[CLZI:.*]] = arith.index_cast %[[CLZ]] : i32 to index
// CHECK-NEXT: %[[SHIFT:.*]] = arith.addi %[[CLZI]], %c-17 : index
// CHECK: %[[FIRST:.*]] = arith.shli %{{.*}}, %{{.*}} : index
// CHECK: %[[CHUNKHEADS:.*]] = arith.select
// CHECK-NEXT: %[[HEADOFF:.*]] = arith.subi %[[YI]], %[[FIRST]] : index
// CHECK-NEXT: %[[ROWS:.*]] = arith.muli %[[HEADOFF]], %[[ROWBLOCKS]] : index
// CHECK-NEXT: %[[WITHIN:.*]] = arith.addi %[[ROWS]], %[[XI]] : index
// The division is 32-bit (ptxas expands a 64-bit one into a long subroutine).
// CHECK-DAG: %[[CHUNKHEADS32:.*]] = arith.index_castui %[[CHUNKHEADS]] : index to i32
// CHECK-DAG: %[[WITHIN32:.*]] = arith.index_castui %[[WITHIN]] : index to i32
// CHECK: %[[QUOT:.*]] = arith.divui %[[WITHIN32]], %[[CHUNKHEADS32]] : i32
// CHECK-NEXT: %[[FROMLAST:.*]] = arith.index_castui %[[QUOT]] : i32 to index
// CHECK-NOT: arith.divui
// CHECK: %[[LASTROW:.*]] = arith.subi %[[ROWBLOCKS]], %c1
// CHECK-NEXT: arith.subi %[[LASTROW]], %[[FROMLAST]] : index
flashjit.attention_fwd @causal_order arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "causal", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 1>
