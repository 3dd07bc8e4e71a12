// File: tests/kernels_emulated/probe_kernels.h
//
// Small kernels (probe_kernels.cu) that exercise the emulator itself: a correct block sum, the
// same sum without one of its barriers, warp collectives against their definitions, and the
// faults the emulator must report. Host pointers throughout (the emulated build runs on the CPU).
#pragma once

#include <cstdint>

namespace thinwire::kernels::probe {

// out[b] = sum of in[b * threads + t] over t, a tree in shared memory; withBarrier false drops
// the barrier between the tree's levels (a race the reverse order exposes). Returns the launch
// error (cudaError_t).
int blockSums(const float* in, int blocks, int threads, bool withBarrier, float* out);
// For every thread t of one 64-thread block: out[4t..4t+3] = shfl from lane (t + 3) % 32,
// shfl_down by 5, shfl_xor with 6, ballot of (lane % 3 == 0).
int warpCollectives(const uint32_t* in, uint32_t* out);
// Lanes 16..31 of a warp return before a full-mask shuffle (undefined on the device).
int shuffleAfterExit(float* out);
// Lanes 0..15 wait at __syncthreads while lanes 16..31 wait at a full-mask shuffle: a hang.
int barrierAgainstShuffle(float* out);
// A launch with `threads` threads per block and `sharedBytes` of dynamic shared memory; when
// raise, the kernel's limit is raised to sharedBytes first (cudaFuncSetAttribute).
int launchWithShared(int threads, int sharedBytes, bool raise, float* out);

}  // namespace thinwire::kernels::probe
