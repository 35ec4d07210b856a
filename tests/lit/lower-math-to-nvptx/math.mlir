// RUN: flashjit-opt %s --flashjit-lower-math-to-nvptx | FileCheck %s
// Without the pass the checks fail: they see the lowering, not the input.
// RUN: flashjit-opt %s | not FileCheck %s

// CHECK-LABEL: func.func @f32
// CHECK: llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"(%{{.*}}) : (f32) -> f32
// CHECK: llvm.call_intrinsic "llvm.nvvm.lg2.approx.f"(%{{.*}}) : (f32) -> f32
// CHECK: llvm.intr.fma
// CHECK-NOT: math.
func.func @f32(%x: f32, %y: f32) -> f32 {
  %a = math.exp2 %x : f32
  %b = math.log2 %a : f32
  %c = math.fma %a, %b, %y : f32
  return %c : f32
}

// Other widths keep their math ops.
// CHECK-LABEL: func.func @f64
// CHECK: math.exp2
func.func @f64(%x: f64) -> f64 {
  %a = math.exp2 %x : f64
  return %a : f64
}
