//===- FamilyRegistry.h - The kernel families of kernels/ -------*- C++ -*-===//
#ifndef FLASHJIT_KERNELS_FORWARD_FAMILYREGISTRY_H
#define FLASHJIT_KERNELS_FORWARD_FAMILYREGISTRY_H

#include "flashjit/compiler/KernelFamily.h"

#include <memory>

namespace flashjit {

std::unique_ptr<KernelFamily> makeSm80Family();
std::unique_ptr<KernelFamily> makeSm90Family();

} // namespace flashjit

#endif
