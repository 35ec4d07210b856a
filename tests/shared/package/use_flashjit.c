/* Links flashjit::flashjit from an installed prefix and generates one
   kernel's PTX: the header, the library and its LLVM all work. */
#include <flashjit/flashjit.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  if (flashjit_api_version() != FLASHJIT_API_VERSION) {
    fprintf(stderr, "API %d, header %d\n", flashjit_api_version(),
            FLASHJIT_API_VERSION);
    return 1;
  }
  flashjit_forward_args a;
  if (flashjit_forward_args_init(&a, sizeof a) != FLASHJIT_SUCCESS)
    return 1;
  a.batch = a.heads_q = a.heads_kv = 1;
  a.seqlen_q = a.seqlen_k = 64;
  a.head_dim_qk = 64;
  a.q = a.k = a.v = a.o = (void *)256;
  a.q_strides[2] = a.k_strides[2] = a.v_strides[2] = a.o_strides[2] = 64;
  char *ptx = NULL;
  if (flashjit_generate_ptx(&a, "sm_80", &ptx) != FLASHJIT_SUCCESS) {
    fprintf(stderr, "%s\n", flashjit_last_error());
    return 1;
  }
  const int ok = strstr(ptx, ".target sm_80") != NULL;
  flashjit_free(ptx);
  printf("flashjit %s, PTX for sm_80 %s\n", flashjit_version(),
         ok ? "generated" : "MISSING its .target");
  return ok ? 0 : 1;
}
