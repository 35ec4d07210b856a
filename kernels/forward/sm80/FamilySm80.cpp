//===- FamilySm80.cpp - The sm80 family behind the KernelFamily interface -===//
#include "decode/DecodeKernels.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/LayoutSm80.h"
#include "forward/FamilyRegistry.h"
#include "forward/sm80/ForwardSm80.h"
#include "backward/sm80/BackwardSm80.h"
#include "flashjit/kernels/Backward.h"

namespace flashjit {
namespace {

class Sm80Family final : public KernelFamily {
public:
  Family id() const override { return Family::Sm80; }
  // mma.sync and cp.async exist on every arch flashjit targets.
  Status supports(const AttentionSpec &, Arch) const override {
    return Status::ok();
  }
  TileConfig defaultConfig(const AttentionSpec &spec,
                           Arch arch) const override {
    if (spec.direction == Direction::Backward)
      return defaultBackwardConfigSm80(spec, arch);
    return defaultTileConfigSm80(spec, arch);
  }
  Status validate(const TileConfig &config, const AttentionSpec &spec,
                  Arch arch) const override {
    if (spec.direction == Direction::Backward)
      return validateBackwardSm80(config, spec, arch);
    return validateSm80(config, spec, arch);
  }
  std::optional<TileLimit> exceededLimit(const TileConfig &config,
                                         const AttentionSpec &spec,
                                         Arch arch) const override {
    if (spec.direction == Direction::Backward)
      return backwardLayoutSm80(spec, config).sharedMemBytes >
                     maxSharedMemoryPerBlock(arch)
                 ? std::optional(TileLimit::SharedMemory)
                 : std::nullopt;
    return exceededLimitSm80(config, spec, arch);
  }
  LaunchFacts launchFacts(const AttentionSpec &spec,
                          const TileConfig &config) const override {
    if (spec.direction == Direction::Backward) {
      const BackwardLayout layout = backwardLayoutSm80(spec, config);
      LaunchFacts f;
      f.threadsPerBlock = layout.threads;
      f.sharedMemBytes = layout.sharedMemBytes;
      f.blockM = config.blockM;
      f.ptxasOptLevel = kPtxasOptLevel;
      return f;
    }
    const ForwardLayout layout = forwardLayout(spec, config);
    LaunchFacts f;
    f.threadsPerBlock = layout.threads;
    f.sharedMemBytes = layout.sharedMemBytes;
    f.blockM = config.blockM;
    f.ptxasOptLevel = config.quick ? kQuickPtxasOptLevel : kPtxasOptLevel;
    return f;
  }
  bool hasQuickForm() const override { return true; }
  bool buildsBackward() const override { return true; }
  Status build(mlir::OpBuilder &builder, mlir::Operation *gpuModule,
               std::string_view name, const AttentionSpec &spec,
               const TileConfig &config) const override {
    auto module = llvm::cast<mlir::gpu::GPUModuleOp>(gpuModule);
    if (spec.direction == Direction::Backward) {
      if (mlir::failed(buildBackwardSm80(
              builder, module, llvm::StringRef(name.data(), name.size()), spec,
              config)))
        return Status::error("the sm80 family could not build " +
                             std::string(name));
      return Status::ok();
    }
    if (mlir::failed(buildForwardSm80(builder, module,
                                      llvm::StringRef(name.data(), name.size()),
                                      spec, config)))
      return Status::error("the sm80 family could not build " +
                           std::string(name));
    // The decode helpers live in the forward kernel's module (Decode.h).
    if (spec.splitKV)
      buildCombineKernel(builder, module, combineKernelName(std::string(name)),
                         spec);
    if (spec.pagedKV)
      buildAppendKernel(builder, module, appendKernelName(std::string(name)),
                        spec);
    return Status::ok();
  }
};

} // namespace

std::unique_ptr<KernelFamily> makeSm80Family() {
  return std::make_unique<Sm80Family>();
}

} // namespace flashjit
