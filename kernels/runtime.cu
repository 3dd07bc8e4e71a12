// CUDA runtime calls behind kernels/launch.h, so that no .cc file needs the CUDA headers.
#include <cuda_runtime.h>

#include "kernels/launch.h"

namespace thinwire::kernels::detail {

int deviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // a missing driver is not an error of the next call
    return 0;
  }
  return count;
}

std::string errorString(int error) {
  return std::string(cudaGetErrorName(static_cast<cudaError_t>(error))) + ": " +
         cudaGetErrorString(static_cast<cudaError_t>(error));
}

int lastError() { return static_cast<int>(cudaGetLastError()); }

int synchronizeDevice() { return static_cast<int>(cudaDeviceSynchronize()); }

int copyToHost(void* host, const void* device, int64_t bytes, void* stream) {
  if (bytes == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  cudaError_t error =
      cudaMemcpyAsync(host, device, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, s);
  if (error != cudaSuccess) return static_cast<int>(error);
  return static_cast<int>(cudaStreamSynchronize(s));
}

int copyDeviceToDevice(void* destination, const void* source, int64_t bytes, void* stream) {
  if (bytes == 0) return 0;
  return static_cast<int>(cudaMemcpyAsync(destination, source, static_cast<size_t>(bytes),
                                          cudaMemcpyDeviceToDevice,
                                          static_cast<cudaStream_t>(stream)));
}

}  // namespace thinwire::kernels::detail
