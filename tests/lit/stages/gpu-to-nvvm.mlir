// RUN: flashjit-opt %s --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | FileCheck %s
// RUN: flashjit-opt %s --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | FileCheck %s --check-prefix=LEFT
// The printed stage parses again (a duplicated attribute once made the
// parser refuse it).
// RUN: flashjit-opt %s --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | flashjit-opt | FileCheck %s
//
// The checks fail without what they check: on the gpu stage (before the
// conversion, both prefixes), and on kernels of other warps or dtype.
// RUN: flashjit-opt %s --flashjit-tile-to-gpu | not FileCheck %s
// RUN: flashjit-opt %s --flashjit-tile-to-gpu | not FileCheck %s --check-prefix=LEFT
// RUN: sed -e 's/warps = 8/warps = 4/' %s | flashjit-opt --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | not FileCheck %s
// RUN: sed -e 's/dtype = "bf16"/dtype = "fp16"/' %s | flashjit-opt --flashjit-tile-to-gpu --flashjit-gpu-to-nvvm | not FileCheck %s

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
//
// What must be gone, anywhere in the output (a prefix of its own: after
// positive checks a CHECK-NOT scans only past the last match).
// LEFT-NOT: builtin.unrealized_conversion_cast
// LEFT-NOT: nvgpu.
// LEFT-NOT: scf.
// LEFT-NOT: memref.
// LEFT-NOT: gpu.func
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2>
