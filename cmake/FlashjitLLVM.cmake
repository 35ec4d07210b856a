# flashjit::llvm: the LLVM + MLIR libraries the compiler links.
#
# Shared (default): Debian's libMLIR.so + libLLVM.so; fast links while developing.
# Static (FLASHJIT_STATIC_LLVM=ON): the static archives in one linker group with
# --gc-sections, so that binaries run where no LLVM is installed (ldd shows
# only libc, libstdc++, zlib and zstd). Only objects we reference are pulled in.
add_library(flashjit_llvm INTERFACE)
add_library(flashjit::llvm ALIAS flashjit_llvm)
target_include_directories(flashjit_llvm SYSTEM INTERFACE
  ${LLVM_INCLUDE_DIRS} ${MLIR_INCLUDE_DIRS})
target_compile_definitions(flashjit_llvm INTERFACE ${LLVM_DEFINITIONS})

if(FLASHJIT_STATIC_LLVM)
  file(GLOB _mlir_archives "${LLVM_LIBRARY_DIR}/libMLIR*.a")
  list(FILTER _mlir_archives EXCLUDE REGEX "libMLIR(CAPI|Test|.*Test|Python|.*TestPasses|TableGen|Tblgen|PDLL|Lsp|.*ExecutionEngine|JitRunner|SparseTensorRuntime)")
  file(GLOB _llvm_archives "${LLVM_LIBRARY_DIR}/libLLVM*.a")
  list(FILTER _llvm_archives EXCLUDE REGEX "libLLVM(TableGen|.*Fuzz|Exegesis|.*Exegesis)")
  find_library(ZSTD_LIBRARY zstd REQUIRED)
  find_package(ZLIB REQUIRED)
  target_link_libraries(flashjit_llvm INTERFACE
    -Wl,--start-group ${_mlir_archives} ${_llvm_archives} -Wl,--end-group
    ZLIB::ZLIB ${ZSTD_LIBRARY} pthread dl)
  target_link_options(flashjit_llvm INTERFACE -Wl,--gc-sections)
else()
  target_link_libraries(flashjit_llvm INTERFACE MLIR LLVM)
endif()
