//===- FamilySm90.cpp - The sm90 family behind the KernelFamily interface -===//
#include "backward/sm90/BackwardSm90.h"
#include "flashjit/kernels/LayoutSm90.h"
#include "forward/FamilyRegistry.h"
#include "forward/sm90/ForwardSm90.h"

namespace flashjit {
namespace {

class Sm90Family final : public KernelFamily {
public:
  Family id() const override { return Family::Sm90; }
  Status supports(const AttentionSpec &spec, Arch arch) const override {
    if (spec.direction == Direction::Backward)
      return supportsBackwardSm90(spec, arch);
    return supportsSm90(spec, arch);
  }
  TileConfig defaultConfig(const AttentionSpec &spec, Arch arch) const override {
    if (spec.direction == Direction::Backward)
      return defaultBackwardConfigSm90(spec, arch);
    return defaultTileConfigSm90(spec, arch);
  }
  Status validate(const TileConfig &config, const AttentionSpec &spec,
                  Arch arch) const override {
    if (spec.direction == Direction::Backward)
      return validateBackwardSm90(config, spec, arch);
    return validateSm90(config, spec, arch);
  }
  std::optional<TileLimit> exceededLimit(const TileConfig &config,
                                         const AttentionSpec &spec,
                                         Arch arch) const override {
    if (spec.direction == Direction::Backward) {
      const BackwardSm90Layout l = backwardLayoutSm90(spec, config);
      if (l.sharedMemBytes > maxSharedMemoryPerBlock(arch))
        return TileLimit::SharedMemory;
      if (!validateBackwardSm90(config, spec, arch))
        return TileLimit::Registers;
      return std::nullopt;
    }
    return exceededLimitSm90(config, spec, arch);
  }
  LaunchFacts launchFacts(const AttentionSpec &spec,
                          const TileConfig &config) const override {
    if (spec.direction == Direction::Backward)
      return backwardLaunchFactsSm90(spec, config);
    return launchFactsSm90(spec, config);
  }
  bool buildsBackward() const override { return true; }
  Status build(mlir::OpBuilder &builder, mlir::Operation *gpuModule,
               std::string_view name, const AttentionSpec &spec,
               const TileConfig &config) const override {
    auto module = llvm::cast<mlir::gpu::GPUModuleOp>(gpuModule);
    const llvm::StringRef kernel(name.data(), name.size());
    const bool built =
        spec.direction == Direction::Backward
            ? mlir::succeeded(
                  buildBackwardSm90(builder, module, kernel, spec, config))
            : mlir::succeeded(
                  buildForwardSm90(builder, module, kernel, spec, config));
    if (!built)
      return Status::error("the sm90 family could not build " +
                           std::string(name));
    return Status::ok();
  }
};

} // namespace

std::unique_ptr<KernelFamily> makeSm90Family() {
  return std::make_unique<Sm90Family>();
}

} // namespace flashjit
