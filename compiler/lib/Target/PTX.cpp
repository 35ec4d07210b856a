//===- PTX.cpp - gpu.module (NVVM) -> LLVM IR -> PTX ----------------------===//
#include "Target/PTX.h"

#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/GlobalVariable.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Verifier.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Triple.h"

#include <mutex>

namespace flashjit {
namespace {
constexpr const char *kTriple = "nvptx64-nvidia-cuda";
/// LLVM's middle end for one generated kernel: straight-line code in one
/// loop. It needs the conversion's glue cleaned up (CSE, instcombine, DCE),
/// reassociation (without it ptxas takes 6% longer on the d=128 kernel),
/// LICM (without it that kernel spills) and a rotated main loop (without it
/// the d=128 causal kernel ran 6% slower on the H200). O3 does the same for
/// these kernels in a third more time: its inliner, vectorisers and GVN find
/// nothing to do, and its full unroll would undo the run-time loops of the
/// prologue and the epilogue. One instcombine iteration (no fixpoint check)
/// and no early-cse before it give the same PTX in 17% less time (MLIR's
/// CSE already ran).
constexpr const char *kMiddleEnd =
    "function(instcombine<no-verify-fixpoint;max-iterations=1>,simplifycfg,"
    "reassociate,loop(loop-rotate),loop-mssa(licm),early-cse<memssa>,"
    "instcombine<no-verify-fixpoint;max-iterations=1>,adce,simplifycfg)";
/// NVPTX address space of shared memory.
constexpr unsigned kSharedAddressSpace = 3;

Expected<std::unique_ptr<llvm::TargetMachine>> createTargetMachine(Arch arch) {
  static std::once_flag once;
  std::call_once(once, [] {
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
  });
  llvm::Triple triple(kTriple);
  std::string error;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return Status::error("NVPTX target unavailable: " + error);
  std::string cpu(toString(arch));
  std::string features = ptxFeature(arch);
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      triple, cpu, features, options, std::nullopt, std::nullopt,
      // Aggressive only swaps the backend's EarlyCSE for a GVN here: the same
      // PTX for our kernels, at 3% more compile time.
      llvm::CodeGenOptLevel::Default));
  if (!tm)
    return Status::error("cannot create an NVPTX target machine for " + cpu);
  return tm;
}
} // namespace

Expected<std::unique_ptr<llvm::Module>>
translateToLLVMIR(mlir::gpu::GPUModuleOp module, llvm::LLVMContext &llvmCtx,
                  Arch arch) {
  std::unique_ptr<llvm::Module> llvmModule =
      mlir::translateModuleToLLVMIR(module, llvmCtx, module.getName());
  if (!llvmModule)
    return Status::error("translation of the NVVM module to LLVM IR failed");
  // gpu.dynamic_shared_memory becomes an internal zero-length shared
  // global, which NVPTX emits as a one-byte *static* variable: then a
  // kernel with exactly 48 KiB of dynamic shared memory needs 48 KiB + 1
  // and fails to launch without the opt-in. External, it is the
  // `.extern .shared .b8 name[]` of dynamic shared memory.
  for (llvm::GlobalVariable &g : llvmModule->globals())
    if (g.getAddressSpace() == kSharedAddressSpace &&
        g.getValueType()->isArrayTy() &&
        g.getValueType()->getArrayNumElements() == 0) {
      g.setInitializer(nullptr);
      g.setLinkage(llvm::GlobalValue::ExternalLinkage);
    }
  {
    std::string problems;
    llvm::raw_string_ostream os(problems);
    if (llvm::verifyModule(*llvmModule, &os))
      return Status::error("the translated LLVM IR is invalid: " + problems);
  }
  auto tm = createTargetMachine(arch);
  if (!tm)
    return tm.status();
  llvmModule->setTargetTriple(llvm::Triple(kTriple));
  llvmModule->setDataLayout((*tm)->createDataLayout());

  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder pb(tm->get());
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::ModulePassManager mpm;
  if (llvm::Error err = pb.parsePassPipeline(mpm, kMiddleEnd))
    return Status::error("internal: LLVM pipeline: " +
                         llvm::toString(std::move(err)));
  mpm.run(*llvmModule, mam);
  return llvmModule;
}

Expected<std::string> emitPTX(llvm::Module &module, Arch arch) {
  auto tm = createTargetMachine(arch);
  if (!tm)
    return tm.status();
  std::string ptx;
  {
    llvm::raw_string_ostream os(ptx);
    llvm::buffer_ostream bos(os);
    llvm::legacy::PassManager pm;
    if ((*tm)->addPassesToEmitFile(pm, bos, nullptr,
                                   llvm::CodeGenFileType::AssemblyFile))
      return Status::error("the NVPTX backend cannot emit assembly");
    pm.run(module);
  }
  return ptx;
}

} // namespace flashjit
