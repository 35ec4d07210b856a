//===- RegisterFamilies.cpp - Test programs register the kernel families --===//
//
// Linked as an object into every test program (not from an archive, so the
// initialiser runs): tests call compile() and the passes directly, which
// need the families that Runtime::create would register.
//
//===----------------------------------------------------------------------===//
#include "flashjit/kernels/Families.h"

namespace {
const bool registered = [] {
  flashjit::registerKernelFamilies();
  return true;
}();
} // namespace
