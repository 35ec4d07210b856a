// RUN: flashjit-opt %s --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | FileCheck %s
// The printed stage parses again (a duplicated attribute once made the
// parser refuse it).
// RUN: flashjit-opt %s --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | flashjit-opt | FileCheck %s

// The nvvm stage: only LLVM and NVVM ops remain inside the gpu.module;
// tensors are bare pointers (one parameter each).
// CHECK: gpu.module @k [#nvvm.target
// CHECK: llvm.func @k(%{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: i64
// CHECK-SAME: gpu.kernel
// CHECK-SAME: nvvm.kernel
// CHECK-SAME: nvvm.maxntid = array<i32: 256, 1, 1>
// CHECK-NOT: nvvm.maxntid
// CHECK: nvvm.read.ptx.sreg.tid.x
// CHECK: nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache = cg
// CHECK: nvvm.ldmatrix
// CHECK: nvvm.mma.sync {{.*}} multiplicandAPtxType = #nvvm.mma_type<bf16>
// CHECK: nvvm.shfl.sync bfly
// CHECK: llvm.nvvm.ex2.approx.ftz.f32
// CHECK-NOT: builtin.unrealized_conversion_cast
// CHECK-NOT: nvgpu.
// CHECK-NOT: scf.
// CHECK-NOT: memref.
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2>
