// File: kernels/emulation/emulator.h
//
// A CUDA execution model on the CPU, for testing the kernels of kernels/*.cu where no GPU is: the
// emulated build compiles the same .cu sources with the host compiler against the headers of this
// folder (cuda_runtime.h, cuda_fp16.h), and every launch runs here. Each CUDA thread of a block is
// a fiber (ucontext) with its own stack; one OS thread runs them, block after block, and a block
// warp after warp. A fiber runs until it reaches __syncthreads, a warp collective
// (__shfl_*_sync, __ballot_sync) or its end; a collective is released as soon as the last lane it
// names arrives, and that warp runs on until each of its lanes waits at __syncthreads or has
// exited, before the next warp runs: a warp gets ahead of the others, as it may on the device.
// When every warp has stopped, the barrier is released. `__shared__` variables are function statics
// (blocks run one at a time), dynamic shared memory is a per-launch buffer filled with 0xff bytes
// (NaN as float), so a read of shared memory that no thread wrote shows up.
//
// What it checks, beyond computing the kernels' results on the CPU:
// - a warp collective whose mask names a lane that has exited, is outside the block, or waits
//   at a different collective or at __syncthreads: error, naming the kernel's block and lanes;
// - a block that can make no progress (a barrier that not every live thread reaches): error;
// - launch limits of the real device: 1 to 1024 threads, at least one block, dynamic shared
//   memory within 48 KiB unless cudaFuncSetAttribute raised it (at most 227 KiB): the launch
//   fails with cudaErrorInvalidConfiguration, as on the GPU, and the kernel does not run.
// Order(kReverse) runs the warps, and the lanes of each, from the last to the first, so a kernel
// that reads another thread's write without a barrier between them computes something else in
// one of the two orders; the tests run every kernel in both. Limitation: the lanes of a warp that
// wait at collectives take part in one collective, named by the first lane's mask (the kernels
// use full masks).
//
// What it cannot check: memory ordering between blocks (they run one after another), timing, or
// anything about speed. Floating-point results are the host's; where the CPU has FMA, the
// emulated kernels are compiled to fuse a * b + c as nvcc does (tests/kernels_emulated), so an
// expression written without the rounding helpers of kernels/device_math.cuh loses bit identity
// here too, though the host compiler and nvcc need not fuse the very same expressions.
//
// Ownership: no state survives a launch except the order, the sticky launch error and the
// shared-memory limits raised by cudaFuncSetAttribute.
// Threading: one launch at a time per process (the tests are single-threaded).
//
// Example (what the emulated cuda_runtime.h expands a launch to):
//   TW_LAUNCH(myKernel, blocks, 256, 0, stream)(a, b);
//   // == emulation::launch(myKernel, blocks, 256, 0)(a, b): runs every thread, then returns
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

namespace thinwire::kernels::emulation {

struct Dim3 {
  unsigned x = 1;
  unsigned y = 1;
  unsigned z = 1;
};

enum class Order { kForward, kReverse };
void setOrder(Order order);
Order order();

const Dim3& threadIndex();
const Dim3& blockIndex();
const Dim3& blockDimension();
const Dim3& gridDimension();

void syncThreads();

enum class Collective : uint8_t { kShuffle, kShuffleDown, kShuffleXor, kBallot };
// One lane's part in a warp collective: the 64-bit pattern of its value, returns the pattern of
// the value it receives (for a ballot: the mask of lanes whose value is non-zero).
uint64_t warpCollective(Collective kind, unsigned mask, uint64_t bits, int argument, int width);

// Sticky error of the last launch (cudaError_t values), read and cleared by cudaGetLastError.
int takeLaunchError();

// Dynamic shared memory of the running launch (bytes given at launch), 16-byte aligned.
void* dynamicSharedBytes();
void allowDynamicShared(const void* kernel, int bytes);

// Runs body on grid x block fibers. A configuration that would fail on the device sets the
// launch error (cudaGetLastError) and runs nothing. Throws std::logic_error for a kernel fault.
void run(const void* kernel,
         int64_t blocks,
         int64_t threads,
         int64_t sharedBytes,
         const std::function<void()>& body);

template <typename T>
T* dynamicShared() {
  return static_cast<T*>(dynamicSharedBytes());
}

template <typename T>
T collective(Collective kind, unsigned mask, T value, int argument, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                "a warp value of 8 bytes at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const uint64_t received = warpCollective(kind, mask, bits, argument, width);
  T result;
  std::memcpy(&result, &received, sizeof(T));
  return result;
}

template <typename Kernel>
class Launch {
 public:
  Launch(Kernel kernel, int64_t blocks, int64_t threads, int64_t sharedBytes)
      : kernel_(kernel), blocks_(blocks), threads_(threads), sharedBytes_(sharedBytes) {}

  template <typename... Args>
  void operator()(const Args&... args) const {
    run(reinterpret_cast<const void*>(kernel_), blocks_, threads_, sharedBytes_,
        [&]() { kernel_(args...); });
  }

 private:
  Kernel kernel_;
  int64_t blocks_;
  int64_t threads_;
  int64_t sharedBytes_;
};

template <typename Kernel>
Launch<Kernel> launch(Kernel kernel, int64_t blocks, int64_t threads, int64_t sharedBytes) {
  return Launch<Kernel>(kernel, blocks, threads, sharedBytes);
}

}  // namespace thinwire::kernels::emulation
