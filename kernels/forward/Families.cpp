//===- Families.cpp - Registers kernels/'s families with the compiler -----===//
#include "flashjit/kernels/Families.h"

#include "forward/FamilyRegistry.h"

#include <mutex>

namespace flashjit {

void registerKernelFamilies() {
  static std::once_flag once;
  std::call_once(once, [] {
    registerFamily(makeSm80Family());
    registerFamily(makeSm90Family());
  });
}

} // namespace flashjit
