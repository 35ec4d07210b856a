//===- Families.h - Registering the kernel families -----------------------===//
#ifndef FLASHJIT_KERNELS_FAMILIES_H
#define FLASHJIT_KERNELS_FAMILIES_H

namespace flashjit {

/// Registers every kernel family of kernels/ with the compiler's registry
/// (KernelFamily.h). Idempotent and thread-safe; call it before the first
/// compile (Runtime::create does). An explicit call, because static
/// archives drop static initialisers.
void registerKernelFamilies();

} // namespace flashjit

#endif // FLASHJIT_KERNELS_FAMILIES_H
