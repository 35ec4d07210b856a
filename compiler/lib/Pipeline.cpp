//===- Pipeline.cpp - THE one place where stage order lives ----------------===//
//
//   tile  flashjit.attention_fwd (spec + tile config + arch)
//    |    flashjit-select-tile-config, flashjit-lower-attention-to-gpu
//   gpu   gpu.module with gpu/nvgpu/nvvm/scf/vector/memref/arith/math
//    |    flashjit-lower-math-to-nvptx, MLIR's nvgpu/vector/scf/nvvm/arith
//    |    -> LLVM and gpu -> NVVM conversions
//   nvvm  gpu.module in the LLVM + NVVM dialects
//    |    translateModuleToLLVMIR, a lean LLVM middle end
//   llvm  LLVM IR for nvptx64-nvidia-cuda
//    |    NVPTX backend
//   ptx   PTX text (ptxas or the driver's JIT makes the cubin)
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/Pipeline.h"
#include "Target/PTX.h"
#include "flashjit/Transforms/Passes.h"
#include "flashjit/Transforms/Pipelines.h"
#include "flashjit/compiler/KernelFamily.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/NVGPUToNVVM/NVGPUToNVVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <functional>

#ifndef FLASHJIT_VERSION_STRING
#define FLASHJIT_VERSION_STRING "0.0.0"
#endif

namespace flashjit {

// ---- stage names -------------------------------------------------------------
std::string_view toString(Stage s) {
  switch (s) {
  case Stage::Tile: return "tile";
  case Stage::Gpu: return "gpu";
  case Stage::Nvvm: return "nvvm";
  case Stage::Llvm: return "llvm";
  case Stage::Ptx: return "ptx";
  }
  return "?";
}
std::optional<Stage> parseStage(std::string_view s) {
  for (Stage st : kAllStages)
    if (toString(st) == s)
      return st;
  return std::nullopt;
}
std::string stageChoices() {
  std::string out;
  for (Stage st : kAllStages)
    out += (out.empty() ? "" : "|") + std::string(toString(st));
  return out;
}
std::string stageFileName(Stage s) {
  switch (s) {
  case Stage::Tile: return "kernel.tile.mlir";
  case Stage::Gpu: return "kernel.gpu.mlir";
  case Stage::Nvvm: return "kernel.nvvm.mlir";
  case Stage::Llvm: return "kernel.ll";
  case Stage::Ptx: return "kernel.ptx";
  }
  return "kernel.txt";
}
const std::string *Artifact::text(Stage s) const {
  for (const auto &[stage, text] : stageText)
    if (stage == s)
      return &text;
  return nullptr;
}

std::string flashjitVersion() {
  return std::string(FLASHJIT_VERSION_STRING) + "+cg" +
         std::to_string(kCodegenRevision);
}
std::string llvmVersion() { return LLVM_VERSION_STRING; }

// ---- the pipeline -------------------------------------------------------------
void registerDialects(mlir::DialectRegistry &registry) {
  registry.insert<tile::TileDialect, mlir::arith::ArithDialect,
                  mlir::cf::ControlFlowDialect, mlir::func::FuncDialect,
                  mlir::gpu::GPUDialect, mlir::LLVM::LLVMDialect,
                  mlir::math::MathDialect, mlir::memref::MemRefDialect,
                  mlir::NVVM::NVVMDialect, mlir::nvgpu::NVGPUDialect,
                  mlir::scf::SCFDialect, mlir::ub::UBDialect,
                  mlir::vector::VectorDialect>();
  // convert-gpu-to-nvvm lowers every dialect through its ConvertToLLVM
  // interface; these are registered as extensions, not with the dialects.
  mlir::arith::registerConvertArithToLLVMInterface(registry);
  mlir::cf::registerConvertControlFlowToLLVMInterface(registry);
  mlir::registerConvertFuncToLLVMInterface(registry);
  mlir::registerConvertMathToLLVMInterface(registry);
  mlir::registerConvertMemRefToLLVMInterface(registry);
  mlir::registerConvertNVVMToLLVMInterface(registry);
  mlir::ub::registerConvertUBToLLVMInterface(registry);
  mlir::vector::registerConvertVectorToLLVMInterface(registry);
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  mlir::registerNVVMDialectTranslation(registry);
  mlir::registerGPUDialectTranslation(registry);
}

void buildTileToGpuPipeline(mlir::OpPassManager &pm) {
  pm.addPass(createSelectTileConfig());
  pm.addPass(createLowerAttentionToGPU());
  pm.addPass(mlir::createCSEPass());
}

void buildGpuToNvvmPipeline(mlir::OpPassManager &pm) {
  pm.addPass(createLowerMathToNVPTX());
  pm.addPass(mlir::createConvertNVGPUToNVVMPass());
  // NVVM ops without an LLVM intrinsic (mbarrier waits, wgmma) become inline
  // PTX; ops with one stay for the translation.
  pm.addPass(mlir::createConvertNVVMToLLVMPass());
  pm.addPass(mlir::createSCFToControlFlowPass());
  // Everything else (arith, memref, vector, cf, nvvm, gpu) goes to LLVM in
  // one conversion (flashjit-convert-to-nvvm), through the ConvertToLLVM
  // interfaces registered in registerDialects(). (mlir's
  // gpu-lower-to-nvvm-pipeline runs several more passes; for our IR they
  // only cost time.)
  mlir::OpPassManager &gpuPm = pm.nest<mlir::gpu::GPUModuleOp>();
  gpuPm.addPass(createConvertToNVVM());
  gpuPm.addPass(mlir::createReconcileUnrealizedCastsPass());
  gpuPm.addPass(createAttachGridConstants());
  // CSE only: LLVM's instcombine in the next stage folds what canonicalize
  // would (and without this CSE translation and LLVM take as long again).
  gpuPm.addPass(mlir::createCSEPass());
}

namespace {
/// Collects MLIR diagnostics into one message.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(mlir::MLIRContext &ctx)
      : handler_(&ctx, [this](mlir::Diagnostic &d) {
          llvm::raw_string_ostream os(text_);
          if (!text_.empty())
            os << "\n";
          os << d;
          for (auto &note : d.getNotes())
            os << "\n  note: " << note;
          return mlir::success();
        }) {}
  Status error(const std::string &what) const {
    return Status::error(what + (text_.empty() ? "" : ": " + text_));
  }

private:
  std::string text_;
  mlir::ScopedDiagnosticHandler handler_;
};

std::string print(mlir::Operation *op) {
  std::string text;
  llvm::raw_string_ostream os(text);
  op->print(os);
  return text;
}
} // namespace

Expected<Artifact> compile(const AttentionSpec &spec, const TileConfig &config,
                           Arch arch, const CompileOptions &options) {
  if (Status s = validate(config, spec, arch); !s)
    return s;
  Artifact art;
  art.kernelName = kernelName(spec, config, arch);
  art.launch = launchFacts(spec, config);
  // Records the stage's time and, only when asked for, its text (printing a
  // large module costs as much as a pass). True when compile() stops here.
  auto stageStart = std::chrono::steady_clock::now();
  auto keep = [&](Stage s, const std::function<std::string()> &text) {
    auto now = std::chrono::steady_clock::now();
    art.stageMillis.emplace_back(
        s, std::chrono::duration<double, std::milli>(now - stageStart).count());
    if (options.keepAllStages || s == options.stopAfter)
      art.stageText.emplace_back(s, text());
    stageStart = std::chrono::steady_clock::now();
    return s == options.stopAfter;
  };

  mlir::DialectRegistry registry;
  registerDialects(registry);
  mlir::MLIRContext ctx(registry, mlir::MLIRContext::Threading::DISABLED);
  ctx.loadAllAvailableDialects();
  DiagnosticCollector diagnostics(ctx);

  // tile
  mlir::OpBuilder builder(&ctx);
  auto loc = mlir::NameLoc::get(builder.getStringAttr(art.kernelName));
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(loc);
  builder.setInsertionPointToEnd(module->getBody());
  tile::AttentionFwdOp::create(builder, loc, art.kernelName,
                               std::string(toString(arch)),
                               tile::toAttr(&ctx, spec),
                               tile::toAttr(&ctx, config));
  if (mlir::failed(mlir::verify(*module)))
    return diagnostics.error("invalid tile-level kernel");
  if (keep(Stage::Tile, [&] { return print(*module); }))
    return art;

  // gpu
  // Each stage's module is verified once, after its pipeline, not after
  // every pass: each verification walks the whole unrolled kernel. The gpu
  // stage is what the kernel generator built; the nvvm stage is MLIR's
  // conversions of it, and its LLVM IR is verified after translation.
  mlir::PassManager toGpu(&ctx);
  buildTileToGpuPipeline(toGpu);
  toGpu.enableVerifier(false);
  if (mlir::failed(toGpu.run(*module)) || mlir::failed(mlir::verify(*module)))
    return diagnostics.error("lowering to the gpu stage failed");
  if (keep(Stage::Gpu, [&] { return print(*module); }))
    return art;

  // nvvm
  mlir::PassManager toNvvm(&ctx);
  buildGpuToNvvmPipeline(toNvvm);
  toNvvm.enableVerifier(false);
  if (mlir::failed(toNvvm.run(*module)))
    return diagnostics.error("lowering to the nvvm stage failed");
  if (keep(Stage::Nvvm, [&] { return print(*module); }))
    return art;

  // llvm
  mlir::gpu::GPUModuleOp gpuModule;
  module->walk([&](mlir::gpu::GPUModuleOp m) { gpuModule = m; });
  if (!gpuModule)
    return Status::error("internal: no gpu.module after lowering");
  llvm::LLVMContext llvmCtx;
  auto llvmModule = translateToLLVMIR(gpuModule, llvmCtx, arch);
  if (!llvmModule)
    return diagnostics.error(llvmModule.message());
  if (keep(Stage::Llvm, [&] {
        std::string text;
        llvm::raw_string_ostream os(text);
        (*llvmModule)->print(os, nullptr);
        return text;
      }))
    return art;

  // ptx
  auto ptx = emitPTX(**llvmModule, arch);
  if (!ptx)
    return ptx.status();
  art.ptx = *ptx;
  keep(Stage::Ptx, [&] { return *ptx; });
  return art;
}

} // namespace flashjit
