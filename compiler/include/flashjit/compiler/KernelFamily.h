//===- KernelFamily.h - What the pipeline asks of a kernel family ---------===//
//
// A kernel family is one design of the forward kernel (sm80: FlashAttention
// 2; sm90: FlashAttention 3) behind one interface: which specs and archs it
// serves, its default and resource checks per arch, the launch facts of its
// kernels, and "build the kernel". Families live in kernels/ and are
// registered by an explicit call (flashjit::registerKernelFamilies(),
// kernels/include/flashjit/kernels/Families.h): the compiler asks this
// interface and never includes a family's header, so dependencies run one
// way (kernels -> compiler).
//
// Plain C++: the build hook takes MLIR objects by forward declaration only.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_COMPILER_KERNELFAMILY_H
#define FLASHJIT_COMPILER_KERNELFAMILY_H

#include "flashjit/compiler/AttentionSpec.h"

#include <memory>
#include <optional>
#include <string_view>

namespace mlir {
class OpBuilder;
class Operation;
} // namespace mlir

namespace flashjit {

/// One TMA tensor map a kernel takes by value (a 128-byte CUtensorMap): the
/// box it copies is `rows` x `cols` elements (the innermost `cols` at most
/// 64: one 128-byte swizzle span), swizzled by 128 bytes. rows == 0: the
/// kernel takes no map for that operand. heads > 1: the rows are (sequence
/// row, head) pairs, head fastest, of `heads` adjacent heads (a packed GQA
/// group): the map's dimensions are (cols, heads, rows, batch), not (cols,
/// rows, heads, batch), and its box is cols x heads x rows / heads.
struct TmaBox {
  int rows = 0;
  int cols = 0;
  int heads = 1;
  bool operator==(const TmaBox &o) const {
    return rows == o.rows && cols == o.cols && heads == o.heads;
  }
};

/// What a launcher needs besides the PTX; a function of (spec, config)
/// alone, so that nothing read from a cache decides it.
struct LaunchFacts {
  int threadsPerBlock = 0;
  int sharedMemBytes = 0; ///< dynamic shared memory to request
  int blockM = 0;         ///< tile rows per CTA (grid.x = ceil(rows / blockM))
  /// `ptxas -O<n>`, the driver JIT's CU_JIT_OPTIMIZATION_LEVEL.
  int ptxasOptLevel = 3;
  /// Tensor maps of Q, K, V and (backward) dO, passed after the kernel's
  /// other arguments in this order (those with rows > 0).
  TmaBox tmaQ, tmaK, tmaV, tmaDO;
  bool usesTma() const {
    return tmaQ.rows > 0 || tmaK.rows > 0 || tmaV.rows > 0 || tmaDO.rows > 0;
  }
};

class KernelFamily {
public:
  virtual ~KernelFamily();
  virtual Family id() const = 0;
  /// Ok when the family can build kernels of `spec` for `arch`; else why not
  /// ("the sm90 family needs sm_90a, got sm_80").
  virtual Status supports(const AttentionSpec &spec, Arch arch) const = 0;
  /// The family's default tile config (the `family` field set to id()).
  virtual TileConfig defaultConfig(const AttentionSpec &spec,
                                   Arch arch) const = 0;
  /// The family's checks of a config whose family is id(); the message names
  /// the knob and its accepted range, or the resource it exceeds.
  virtual Status validate(const TileConfig &config, const AttentionSpec &spec,
                          Arch arch) const = 0;
  /// The first resource limit `config` exceeds (validate() in words).
  virtual std::optional<TileLimit> exceededLimit(const TileConfig &config,
                                                 const AttentionSpec &spec,
                                                 Arch arch) const = 0;
  virtual LaunchFacts launchFacts(const AttentionSpec &spec,
                                  const TileConfig &config) const = 0;
  /// Whether its configs have a quick form (TileConfig::quick): a
  /// bitwise-identical kernel that compiles sooner, the runtime's first
  /// tier on a cold miss.
  virtual bool hasQuickForm() const { return false; }
  /// Whether it builds backward specs (AttentionSpec::direction): their
  /// kernels, defaults, checks and launch facts (of the main kernel).
  virtual bool buildsBackward() const { return false; }
  /// Builds the kernel `name` at the end of `gpuModule` (a gpu.module op),
  /// its parameters ForwardKernelArgs followed by the tensor maps of
  /// launchFacts(). `config` is validated.
  virtual Status build(mlir::OpBuilder &builder, mlir::Operation *gpuModule,
                       std::string_view name, const AttentionSpec &spec,
                       const TileConfig &config) const = 0;
};

/// Adds a family (replacing one with the same id).
void registerFamily(std::unique_ptr<KernelFamily> family);
/// The registered family, or null.
const KernelFamily *findFamily(Family id);
/// The registered family, or an error saying it is not registered.
Expected<const KernelFamily *> familyOf(Family id);

/// THE one place that chooses a family when the caller names none: on
/// sm_90a, sm90 for a forward it supports whose rows TMA can address and
/// for a backward from d = 64; sm80 everywhere else.
Family preferredFamily(const AttentionSpec &spec, Arch arch);
/// The default tile config of preferredFamily(spec, arch), or of `family`.
TileConfig defaultTileConfig(const AttentionSpec &spec, Arch arch);
TileConfig defaultTileConfig(const AttentionSpec &spec, Arch arch,
                             Family family);
/// The launch facts of a config (its family's). Assumes a registered family.
LaunchFacts launchFacts(const AttentionSpec &spec, const TileConfig &config);

} // namespace flashjit

#endif // FLASHJIT_COMPILER_KERNELFAMILY_H
