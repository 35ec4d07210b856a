// RUN: flashjit-opt %s --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s

// A paged, split decode kernel (Decode.h): DecodeKernelArgs after the 34
// forward parameters; grid z is batch x splits (32-bit division by the
// split count); the cache length is key_lengths[batch] + new_keys; the
// split's tile run is ceil(tiles / splits) long; each K/V row's address
// goes through the block table (page = key * mul >> shift), looked up by
// one lane per key ahead of the copies, which take it by a shuffle (no
// table load between a shuffle and its copy, nor between K's copies and
// V's: they share the lookups); the epilogue
// writes float32 partials (pairs) and LSE, not O. The module also holds
// the combine and append kernels.
// CHECK-LABEL: gpu.func @k(
// CHECK-SAME: %[[KLEN:arg9]]: memref<1099511627776xi32, 1>
// CHECK-SAME: %[[TABLE:arg34]]: memref<1099511627776xi32, 1>, %[[PO:arg35]]: memref<1099511627776xf32, 1>, %[[PL:arg36]]: memref<1099511627776xf32, 1>, %[[TSTRIDE:arg37]]: i64, %[[ENTRIES:arg38]]: i64, %[[PSIZE:arg39]]: i32, %[[MUL:arg40]]: i32, %[[SHIFT:arg41]]: i32, %[[SPLITS:arg42]]: i32, %[[HQ:arg43]]: i32, %[[NEW:arg44]]: i32) kernel
// CHECK: %[[TS:.*]] = arith.index_cast %[[TSTRIDE]] : i64 to index
// CHECK: %[[Z:.*]] = gpu.block_id  z
// CHECK: %[[Z32:.*]] = arith.index_castui %[[Z]] : index to i32
// CHECK: %[[B32:.*]] = arith.divui %[[Z32]], %[[SPLITS]] : i32
// CHECK: %[[B:.*]] = arith.index_castui %[[B32]] : i32 to index
// CHECK: %[[NS:.*]] = arith.index_cast %[[SPLITS]] : i32 to index
// CHECK: %[[BNS:.*]] = arith.muli %[[B]], %[[NS]] : index
// CHECK: %[[SPLIT:.*]] = arith.subi %[[Z]], %[[BNS]] : index
// CHECK: %[[LEN:.*]] = memref.load %[[KLEN]][%[[B]]]
// CHECK: %[[LENI:.*]] = arith.index_cast %[[LEN]] : i32 to index
// CHECK: %[[NEWI:.*]] = arith.index_cast %[[NEW]] : i32 to index
// CHECK: %[[SEQK:.*]] = arith.addi %[[LENI]], %[[NEWI]] : index
// CHECK: %[[TROW:.*]] = arith.muli %[[B]], %[[TS]] : index
// CHECK: %[[PER32:.*]] = arith.divui %{{.*}}, %[[SPLITS]] : i32
// CHECK: %[[PER:.*]] = arith.index_castui %[[PER32]] : i32 to index
// CHECK: arith.muli %[[SPLIT]], %[[PER]] : index
// CHECK: %[[KEY:.*]] = arith.extui %{{[0-9]+}} : i32 to i64
// CHECK-DAG: %[[SH:.*]] = arith.extui %[[SHIFT]] : i32 to i64
// CHECK-DAG: %[[M:.*]] = arith.extui %[[MUL]] : i32 to i64
// CHECK: %[[PROD:.*]] = arith.muli %[[KEY]], %[[M]] : i64
// CHECK: %[[PAGE64:.*]] = arith.shrui %[[PROD]], %[[SH]] : i64
// CHECK: %[[PAGE:.*]] = arith.index_castui %[[PAGE64]] : i64 to index
// CHECK: %[[ENTRY:.*]] = arith.addi %[[TROW]], %[[PAGE]] : index
// CHECK: memref.load %[[TABLE]][%[[ENTRY]]]
// CHECK: gpu.shuffle  idx
// CHECK-NOT: memref.load %[[TABLE]]
// CHECK: nvgpu.device_async_copy %arg1
// CHECK-NOT: memref.load %[[TABLE]]
// CHECK: nvgpu.device_async_copy %arg2
// CHECK: vector.store %{{.*}}, %[[PO]][%{{.*}}] {alignment = 8 : i64} : memref<1099511627776xf32, 1>, vector<2xf32>
// CHECK: memref.store %{{.*}}, %[[PL]][%{{.*}}] : memref<1099511627776xf32, 1>
// CHECK-NOT: memref.store %{{.*}}, %arg3[
// CHECK-LABEL: gpu.func @k_combine(
// CHECK: gpu.shuffle  xor
// CHECK: math.exp2
// CHECK: nvvm.rcp.approx.ftz.f
// CHECK: math.fma
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK-LABEL: gpu.func @k_append(
// CHECK: vector.load %arg0[%{{.*}}] {alignment = 16 : i64} : memref<1099511627776xbf16, 1>, vector<8xbf16>
// CHECK: vector.store %{{.*}}, %arg2[%{{.*}}] {alignment = 16 : i64} : memref<1099511627776xbf16, 1>, vector<8xbf16>
flashjit.attention_fwd @k arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "none", gqa_group = 8, lse = true, align = 8, key_lengths = true, paged_kv = true, split_kv = true> config = #flashjit.tile<block_m = 16, block_n = 64, warps = 1, stages = 2, pack_gqa = true>
