//===- Passes.td - flashjit's own passes ----------------------*- tablegen -*-===//
#ifndef FLASHJIT_TRANSFORMS_PASSES
#define FLASHJIT_TRANSFORMS_PASSES

include "mlir/Pass/PassBase.td"

def SelectTileConfig : Pass<"flashjit-select-tile-config", "mlir::ModuleOp"> {
  let summary = "Fill in the arch's default tile config and check that it fits";
  let description = [{
    Every flashjit.attention_fwd without a `config` gets the default of the
    per-arch table (kernels/forward/Forward.cpp). Every config is then
    checked against the target's shared memory and register budget; a config
    that cannot fit is an error naming the limit. `family=sm80` picks that
    family's default instead of the preferred family's.
  }];
  let options = [
    Option<"family", "family", "std::string", /*default=*/"\"\"",
           "The kernel family whose default to pick (sm80|sm90); empty: the "
           "preferred family for the arch and spec">
  ];
  let dependentDialects = ["::flashjit::tile::TileDialect"];
}

def LowerAttentionToGPU : Pass<"flashjit-lower-attention-to-gpu", "mlir::ModuleOp"> {
  let summary = "Expand tile-level attention kernels into gpu.module kernels";
  let description = [{
    Replaces each flashjit.attention_fwd by a gpu.module holding one
    gpu.func kernel built by the kernel family for its arch (today the sm_80
    FlashAttention-2 family: cp.async K/V pipeline, ldmatrix, mma.sync
    m16n8k16, online softmax in exp2). Marks the module a gpu container.
  }];
  let dependentDialects = [
    "::mlir::gpu::GPUDialect", "::mlir::nvgpu::NVGPUDialect",
    "::mlir::NVVM::NVVMDialect", "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect", "::mlir::memref::MemRefDialect",
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect"
  ];
}

def LowerMathToNVPTX : Pass<"flashjit-lower-math-to-nvptx"> {
  let summary = "Lower f32 math.exp2 / log2 / fma to NVPTX instructions";
  let description = [{
    convert-gpu-to-nvvm turns math.exp2 and math.log2 into calls of
    libdevice's __nv_exp2f / __nv_log2f, which would need libdevice linked.
    The online softmax wants the MUFU instructions: math.exp2 becomes the
    nvvm ex2.approx.ftz intrinsic and math.log2 lg2.approx (llvm.intr.exp2 is
    illegal in convert-gpu-to-nvvm, and the backend has no flog2 lowering);
    math.fma becomes llvm.intr.fma (fma.rn.f32) instead of __nv_fmaf.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

def ConvertToNVVM : Pass<"flashjit-convert-to-nvvm", "::mlir::gpu::GPUModuleOp"> {
  let summary = "Lower a gpu.module to the LLVM and NVVM dialects in one conversion";
  let description = [{
    What MLIR's convert-gpu-to-nvvm does for our kernels (64-bit indices, one
    bare pointer per memref argument, every dialect through its
    ConvertToLLVM interface, math left to flashjit-lower-math-to-nvptx),
    without its first step: a greedy rewrite of the whole module with the
    GPU rewrite patterns (all-reduce, global id, 64-bit shuffles: none occur
    in generated kernels) that folded every op to a fixpoint and took a
    third of the conversion's time.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect"];
}

def AttachGridConstants : Pass<"flashjit-attach-grid-constants", "::mlir::gpu::GPUModuleOp"> {
  let summary = "Make the tensor-map parameters of converted kernels byval grid constants";
  let description = [{
    A gpu.func may not carry nvvm.grid_constant, so a kernel that takes TMA
    tensor maps by value (128-byte CUtensorMap parameters) declares them as
    !llvm.ptr and lists their indices in `flashjit.grid_constant_args`.
    After the conversion to the LLVM dialect this pass gives those
    parameters of the llvm.func `llvm.byval = !llvm.array<128 x i8>`,
    `llvm.align = 64` and `nvvm.grid_constant` (PTX: `.param .align 64 .b8
    p[128]`, read through its generic address) and drops the list.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect"];
}

#endif // FLASHJIT_TRANSFORMS_PASSES
