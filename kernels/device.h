// File: kernels/device.h
//
// What every CUDA kernel wrapper of thinwire::kernels shares: whether a GPU is there, the
// argument checks, and `DeviceScope`, which makes a tensor's device current and hands out the
// stream the kernels run on. That stream is libtorch's current CUDA stream of the device (when
// libtorch is built with CUDA), so a kernel is ordered after the ATen operations that produced
// its inputs and before those that consume its outputs, with no synchronisation; without a
// CUDA-enabled libtorch (Debian's), no CUDA tensor can exist and the scope is never entered.
//
// Ownership: a DeviceScope restores the previous device when it ends; it owns no stream.
// Threading: cudaAvailable() and deviceCount() are thread-safe; a DeviceScope belongs to the
// thread that made it.
//
// Example:
//   if (!kernels::cudaAvailable()) GTEST_SKIP() << "no CUDA device";
//   kernels::DeviceScope scope(tensor);            // throws InvalidArgument for a CPU tensor
//   kernels::check(detail::launchX(..., scope.stream()), "x");
//   kernels::deviceCopy(source, destination);       // the benchmark's yardstick
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace thinwire::kernels {

// True when thinwire was built with CUDA (THINWIRE_WITH_CUDA) and a CUDA device is visible.
// Never throws.
bool cudaAvailable();
// Visible CUDA devices; 0 without a driver or without CUDA support. Never throws.
int deviceCount();

// True when `tensor` lives where the kernels run: on a CUDA device, or on the CPU in the emulated
// build (kernels/emulation, THINWIRE_KERNELS_EMULATED), which runs the kernels there.
bool onKernelDevice(const at::Tensor& tensor);

// Throws Error naming `what` and the CUDA error when `error` (a cudaError_t) is not cudaSuccess.
void check(int error, const char* what);

// Throws InvalidArgument unless `tensor` is a defined, contiguous float32 CUDA tensor.
void checkCudaFloat(const at::Tensor& tensor, const char* what);

class DeviceScope {
 public:
  // Makes tensor's device current. Throws InvalidArgument for a tensor that is not on CUDA.
  explicit DeviceScope(const at::Tensor& tensor);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

  // libtorch's current CUDA stream of the device, as a cudaStream_t (nullptr: legacy default).
  void* stream() const { return stream_; }

 private:
  struct Guard;
  std::unique_ptr<Guard> guard_;
  void* stream_ = nullptr;
};

// Blocking: waits until every kernel and copy queued on the current device has finished
// (cudaDeviceSynchronize). Throws Error on a CUDA failure. For timing loops and tests.
void synchronizeDevice();

// Blocking only as far as the stream: destination <- source, both contiguous CUDA tensors of the
// same byte size (cudaMemcpyAsync device to device). The kernel benchmark's bandwidth yardstick.
void deviceCopy(const at::Tensor& source, at::Tensor& destination);

}  // namespace thinwire::kernels
