/* libflashjit.so in a process that already holds another LLVM, as torch
 * (Triton), jaxlib and Julia do: the system's libMLIR.so (with its
 * libLLVM.so) is loaded RTLD_GLOBAL, its NVPTX backend emits PTX, then
 * libflashjit.so generates a kernel with the LLVM inside it, then the
 * system LLVM emits again. Had libflashjit.so exported LLVM's symbols, its
 * code would bind to the other copy (or register its options and targets
 * twice and abort); here each keeps its own registry: the system LLVM's
 * target list is the same before and after.
 *
 *   beside_llvm <libMLIR.so> <libflashjit.so> [flashjit-first]
 *
 * "flashjit-first" loads libflashjit.so before libMLIR.so.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flashjit/flashjit.h"

/* The few LLVM-C entry points used, resolved from the global scope. */
typedef void *Ref;
static struct {
  void (*initInfo)(void), (*initTarget)(void), (*initMC)(void),
      (*initAsmPrinter)(void);
  Ref (*firstTarget)(void);
  Ref (*nextTarget)(Ref);
  int (*targetFromTriple)(const char *, Ref *, char **);
  Ref (*createMachine)(Ref, const char *, const char *, const char *, int, int,
                       int);
  Ref (*moduleCreate)(const char *);
  void (*setTarget)(Ref, const char *);
  Ref (*voidType)(void);
  Ref (*functionType)(Ref, Ref *, unsigned, int);
  Ref (*addFunction)(Ref, const char *, Ref);
  Ref (*appendBlock)(Ref, const char *);
  Ref (*createBuilder)(void);
  void (*positionAtEnd)(Ref, Ref);
  Ref (*buildRetVoid)(Ref);
  int (*emitToBuffer)(Ref, Ref, int, char **, Ref *);
  const char *(*bufferStart)(Ref);
} llvm;

static void *symbol(void *scope, const char *name) {
  void *p = dlsym(scope, name);
  if (!p) {
    fprintf(stderr, "missing symbol %s: %s\n", name, dlerror());
    exit(1);
  }
  return p;
}

static void resolveLlvm(void) {
#define GET(field, name) *(void **)&llvm.field = symbol(RTLD_DEFAULT, name)
  GET(initInfo, "LLVMInitializeNVPTXTargetInfo");
  GET(initTarget, "LLVMInitializeNVPTXTarget");
  GET(initMC, "LLVMInitializeNVPTXTargetMC");
  GET(initAsmPrinter, "LLVMInitializeNVPTXAsmPrinter");
  GET(firstTarget, "LLVMGetFirstTarget");
  GET(nextTarget, "LLVMGetNextTarget");
  GET(targetFromTriple, "LLVMGetTargetFromTriple");
  GET(createMachine, "LLVMCreateTargetMachine");
  GET(moduleCreate, "LLVMModuleCreateWithName");
  GET(setTarget, "LLVMSetTarget");
  GET(voidType, "LLVMVoidType");
  GET(functionType, "LLVMFunctionType");
  GET(addFunction, "LLVMAddFunction");
  GET(appendBlock, "LLVMAppendBasicBlock");
  GET(createBuilder, "LLVMCreateBuilder");
  GET(positionAtEnd, "LLVMPositionBuilderAtEnd");
  GET(buildRetVoid, "LLVMBuildRetVoid");
  GET(emitToBuffer, "LLVMTargetMachineEmitToMemoryBuffer");
  GET(bufferStart, "LLVMGetBufferStart");
#undef GET
}

static int targetCount(void) {
  int n = 0;
  for (Ref t = llvm.firstTarget(); t; t = llvm.nextTarget(t))
    ++n;
  return n;
}

/* PTX of an empty function from the system LLVM; exits on failure. */
static void systemLlvmEmits(void) {
  const char *triple = "nvptx64-nvidia-cuda";
  Ref target = NULL;
  char *error = NULL;
  if (llvm.targetFromTriple(triple, &target, &error)) {
    fprintf(stderr, "system LLVM has no NVPTX target: %s\n", error);
    exit(1);
  }
  Ref machine = llvm.createMachine(target, triple, "sm_80", "", 2, 0, 0);
  Ref module = llvm.moduleCreate("m");
  llvm.setTarget(module, triple);
  Ref fn = llvm.addFunction(module, "system_llvm_function",
                            llvm.functionType(llvm.voidType(), NULL, 0, 0));
  Ref builder = llvm.createBuilder();
  llvm.positionAtEnd(builder, llvm.appendBlock(fn, "entry"));
  llvm.buildRetVoid(builder);
  Ref buffer = NULL;
  if (llvm.emitToBuffer(machine, module, /*LLVMAssemblyFile=*/0, &error,
                        &buffer)) {
    fprintf(stderr, "system LLVM failed to emit: %s\n", error);
    exit(1);
  }
  if (!strstr(llvm.bufferStart(buffer), "system_llvm_function")) {
    fprintf(stderr, "system LLVM's PTX lacks its function\n");
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: %s <libMLIR.so> <libflashjit.so> [flashjit-first]\n",
            argv[0]);
    return 2;
  }
  const int flashjitFirst = argc > 3 && !strcmp(argv[3], "flashjit-first");
  void *flashjit = NULL;
  if (flashjitFirst && !(flashjit = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL))) {
    fprintf(stderr, "dlopen %s: %s\n", argv[2], dlerror());
    return 1;
  }
  if (!dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL)) {
    fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  resolveLlvm();
  llvm.initInfo();
  llvm.initTarget();
  llvm.initMC();
  llvm.initAsmPrinter();
  const int targets = targetCount();
  systemLlvmEmits();

  if (!flashjit && !(flashjit = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL))) {
    fprintf(stderr, "dlopen %s: %s\n", argv[2], dlerror());
    return 1;
  }
  flashjit_status (*init)(flashjit_forward_args *, uint64_t) =
      symbol(flashjit, "flashjit_forward_args_init");
  flashjit_status (*generate)(const flashjit_forward_args *, const char *,
                              char **) =
      symbol(flashjit, "flashjit_generate_ptx");
  void (*release)(void *) = symbol(flashjit, "flashjit_free");
  const char *(*lastError)(void) = symbol(flashjit, "flashjit_last_error");
  /* flashjit's own code, not an interposed copy from the global scope. */
  if (dlsym(RTLD_DEFAULT, "flashjit_generate_ptx")) {
    fprintf(stderr, "flashjit_generate_ptx leaked into the global scope\n");
    return 1;
  }

  flashjit_forward_args a;
  if (init(&a, sizeof a) != FLASHJIT_SUCCESS)
    return 1;
  a.batch = 2;
  a.heads_q = a.heads_kv = 4;
  a.seqlen_q = a.seqlen_k = 128;
  a.head_dim_qk = 72;
  a.q = a.k = a.v = a.o = (void *)256;
  for (int t = 0; t < 4; ++t) {
    int64_t *s = t == 0   ? a.q_strides
                 : t == 1 ? a.k_strides
                 : t == 2 ? a.v_strides
                          : a.o_strides;
    s[0] = 128 * 4 * 72;
    s[1] = 72;
    s[2] = 4 * 72;
  }
  a.mask = FLASHJIT_MASK_CAUSAL;
  char *ptx = NULL;
  if (generate(&a, "sm_90a", &ptx) != FLASHJIT_SUCCESS) {
    fprintf(stderr, "flashjit_generate_ptx: %s\n", lastError());
    return 1;
  }
  const int ok = strstr(ptx, ".target sm_90a") && strstr(ptx, "hqk72");
  release(ptx);
  if (!ok) {
    fprintf(stderr, "flashjit's PTX lacks its target or kernel\n");
    return 1;
  }
  if (targetCount() != targets) {
    fprintf(stderr,
            "the system LLVM now has %d targets, %d before: flashjit's LLVM "
            "registered into it\n",
            targetCount(), targets);
    return 1;
  }
  systemLlvmEmits();
  printf("libflashjit.so and the system LLVM (%d targets) side by side, %s "
         "loaded first: both emit PTX\n",
         targets, flashjitFirst ? "libflashjit.so" : "libMLIR.so");
  return 0;
}
