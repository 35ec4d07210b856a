// RUN: flashjit-opt %s -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
//
// Each case's checks fail on its kernel without what they check: the same
// CHECKs against the file with that kernel changed.
// RUN: sed -e '/@d33 /s/head_dim_qk = 33, head_dim_v = 33/head_dim_qk = 32, head_dim_v = 32/; /@d33 /s/align = 1/align = 8/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@d100 /s/head_dim_qk = 100, head_dim_v = 100/head_dim_qk = 96, head_dim_v = 96/; /@d100 /s/align = 4/align = 8/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@d256 /s/head_dim_qk = 256, head_dim_v = 256/head_dim_qk = 64, head_dim_v = 64/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s
// RUN: sed -e '/@gqa /s/gqa_group = 4/gqa_group = 1/' %s | flashjit-opt -split-input-file --flashjit-select-tile-config=family=sm80 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// head_dim 33 with 2-byte alignment: cp.async cannot copy 2 bytes, so the
// tiles are loaded with guarded scalar loads (zeros outside the tensor) and
// the output is stored element by element, only the 33 real columns.
// CHECK-LABEL: gpu.func @d33
// CHECK-NOT: nvgpu.device_async_copy
// CHECK: memref.load
// CHECK: memref.store {{.*}} : memref<128x48xf16, #gpu.address_space<workgroup>>
// CHECK: nvvm.mma.sync
// CHECK-NOT: vector.store
// CHECK: gpu.return
flashjit.attention_fwd @d33 arch = "sm_80" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 33, head_dim_v = 33, mask = "none", gqa_group = 1, lse = false, align = 1>

// -----

// head_dim 100 with 4-element alignment: 8-byte cp.async (no L1 bypass,
// which needs 16 bytes); smem rows of 112, swizzled.
// CHECK-LABEL: gpu.func @d100
// CHECK: nvgpu.device_async_copy {{.*}}, 4, %{{.*}} :
// CHECK-NOT: bypassL1
// CHECK: memref<128x112xbf16
flashjit.attention_fwd @d100 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "none", gqa_group = 1, lse = true, align = 4>

// -----

// head_dim 256: Q does not fit in registers next to O; its fragments are
// re-read from shared memory inside the K/V loop. The default 64x64 tile
// has one stage, pipelined as FlashAttention-2's: the prologue loads the
// first K/V tile; each iteration waits for K, loads V behind Q K^T, waits
// for V, then loads the next K behind the softmax and P V.
// CHECK-LABEL: gpu.func @d256
// CHECK: nvvm.cp.async.commit.group
// CHECK: scf.if
// CHECK: nvgpu.device_async_copy
// CHECK: nvvm.cp.async.commit.group
// CHECK-NEXT: nvvm.cp.async.wait.group 1
// CHECK-NEXT: gpu.barrier
// CHECK-NOT: nvgpu.ldmatrix
// CHECK: scf.for {{.*}} iter_args
// CHECK: nvvm.cp.async.wait.group 0
// CHECK-NEXT: gpu.barrier
// CHECK: scf.if
// CHECK: nvgpu.device_async_copy %arg2
// CHECK: nvvm.cp.async.commit.group
// CHECK: nvgpu.ldmatrix {{.*}} : memref<64x256xbf16, #gpu.address_space<workgroup>> -> vector<4x2xbf16>
// CHECK: nvvm.mma.sync
// CHECK: nvvm.cp.async.wait.group 0
// CHECK-NEXT: gpu.barrier
// CHECK: scf.if
// CHECK: nvgpu.device_async_copy %arg1
// CHECK: nvvm.cp.async.commit.group
// CHECK: math.exp2
flashjit.attention_fwd @d256 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 256, head_dim_v = 256, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// GQA group 4 without packing: the K/V head is the query head / 4.
// CHECK-LABEL: gpu.func @gqa
// CHECK: %[[HEAD:.*]] = gpu.block_id  y
// CHECK: arith.divui %[[HEAD]], %c4
flashjit.attention_fwd @gqa arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 4, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 32, warps = 4, stages = 2>
