// setmaxnreg-probe: one CTA of 384 threads (launched like the sm90 kernels:
// __launch_bounds__(384, 1), so 168 registers a thread) whose first
// warpgroup gives registers away (setmaxnreg.dec P) and whose other two ask
// for C each (setmaxnreg.inc C); every thread then sets its flag. Prints
// which warpgroups finished within 3 s: .inc waits, forever if need be,
// until released registers cover it. Build per pair:
//   nvcc -gencode arch=compute_90a,code=sm_90a -DP=48 -DC=232 -o probe setmaxnreg-probe.cu
#include <cstdio>
#include <cuda_runtime.h>
#include <unistd.h>

__global__ void __launch_bounds__(384, 1) handOff(volatile int *flags) {
  if (threadIdx.x < 128)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(P));
  else
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(C));
  flags[threadIdx.x] = 1;
}

int main() {
  int *flags;
  cudaHostAlloc(&flags, 384 * sizeof(int), cudaHostAllocMapped);
  for (int i = 0; i < 384; ++i)
    flags[i] = 0;
  cudaFuncAttributes a;
  cudaFuncGetAttributes(&a, handOff);
  handOff<<<1, 384>>>(flags);
  int waited = 0;
  while (cudaStreamQuery(0) == cudaErrorNotReady && waited < 30) {
    usleep(100000);
    ++waited;
  }
  int done[3] = {0, 0, 0};
  for (int i = 0; i < 384; ++i)
    done[i / 128] += ((volatile int *)flags)[i];
  std::printf("P=%d C=%d registers=%d need=%d launched=%d: %s; threads done "
              "per warpgroup %d %d %d\n",
              P, C, a.numRegs, 128 * P + 256 * C, 384 * a.numRegs,
              waited < 30 ? "finished" : "HUNG", done[0], done[1], done[2]);
  std::fflush(stdout);
  _exit(0); // a hung kernel would block the context's teardown
}
