// RUN: flashjit-opt %s --flashjit-lower-bf16-mma | FileCheck %s

// bf16 operands are packed into i32 registers and sent to nvvm.mma.sync.
// CHECK-LABEL: func.func @bf16
// CHECK-COUNT-6: vector.bitcast {{.*}} : vector<2xbf16> to vector<1xi32>
// CHECK: nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}
// The result row by row (vector-to-llvm lowers only 1-D from_elements).
// CHECK: %[[POISON:.*]] = ub.poison : vector<2x2xf32>
// CHECK: %[[ROW0:.*]] = vector.from_elements {{.*}} : vector<2xf32>
// CHECK-NEXT: %[[D0:.*]] = vector.insert %[[ROW0]], %[[POISON]] [0] : vector<2xf32> into vector<2x2xf32>
// CHECK: %[[ROW1:.*]] = vector.from_elements {{.*}} : vector<2xf32>
// CHECK-NEXT: %[[D1:.*]] = vector.insert %[[ROW1]], %[[D0]] [1] : vector<2xf32> into vector<2x2xf32>
// CHECK-NEXT: return %[[D1]]
// CHECK-NOT: nvgpu.mma.sync
func.func @bf16(%a: vector<4x2xbf16>, %b: vector<2x2xbf16>, %c: vector<2x2xf32>) -> vector<2x2xf32> {
  %d = nvgpu.mma.sync (%a, %b, %c) {mmaShape = [16, 8, 16]} : (vector<4x2xbf16>, vector<2x2xbf16>, vector<2x2xf32>) -> vector<2x2xf32>
  return %d : vector<2x2xf32>
}

// f16 is left to convert-nvgpu-to-nvvm.
// CHECK-LABEL: func.func @f16
// CHECK: nvgpu.mma.sync
// CHECK-NOT: nvvm.mma.sync
func.func @f16(%a: vector<4x2xf16>, %b: vector<2x2xf16>, %c: vector<2x2xf32>) -> vector<2x2xf32> {
  %d = nvgpu.mma.sync (%a, %b, %c) {mmaShape = [16, 8, 16]} : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf32>) -> vector<2x2xf32>
  return %d : vector<2x2xf32>
}
