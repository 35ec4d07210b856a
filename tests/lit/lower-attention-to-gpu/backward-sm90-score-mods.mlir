// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm90 --flashjit-lower-attention-to-gpu --canonicalize --cse | FileCheck %s
// Without the score modifiers none of it:
// RUN: sed -e 's/, bias = "alibi", softcap = true//' %s | flashjit-opt --flashjit-select-tile-config=family=sm90 --flashjit-lower-attention-to-gpu --canonicalize --cse | not FileCheck %s

// The sm90 backward with a softcap and ALiBi: its scores are keys x
// queries (S^T), so the forward's transform runs element by element. The
// step's head gives the slope (times log2 e), once per step; each score
// becomes cap * tanh(scale * s / cap) in the log2 domain (tanh as
// 1 - 2 / (exp2 + 1)), minus slope * |key - query - diag|, then P = exp2(S'
// - LSE'); dS is multiplied by 1 - tanh^2 of the same score.
// CHECK-LABEL: gpu.func @mods(
// CHECK: %[[SLOPE:.*]] = memref.load %arg6[
// CHECK-NEXT: %[[SLOPE2:.*]] = arith.mulf %[[SLOPE]], %cst
// CHECK: nvvm.wgmma.mma_async
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: %[[E:.*]] = math.exp2
// CHECK-NEXT: %[[D:.*]] = arith.addf %[[E]]
// CHECK-NEXT: %[[R:.*]] = arith.divf %{{.*}}, %[[D]] fastmath<afn>
// CHECK-NEXT: %[[T:.*]] = arith.subf %{{.*}}, %[[R]]
// CHECK: arith.sitofp
// CHECK-NEXT: %[[DIST:.*]] = arith.mulf %[[SLOPE2]],
// CHECK-NEXT: arith.subf %{{.*}}, %[[DIST]]
// CHECK-NEXT: math.fma
// CHECK-NEXT: math.exp2
// CHECK: %[[T2:.*]] = arith.mulf %[[T]], %[[T]]
// CHECK-NEXT: arith.subf %{{.*}}, %[[T2]]
flashjit.attention_fwd @mods arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8, bias = "alibi", softcap = true, direction = "backward">
