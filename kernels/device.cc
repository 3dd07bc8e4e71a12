#include "kernels/device.h"

#include "base/error.h"
#include "kernels/launch.h"

#if defined(THINWIRE_TORCH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace thinwire::kernels {

#if defined(THINWIRE_TORCH_CUDA)
struct DeviceScope::Guard {
  explicit Guard(c10::Device device) : guard(device) {}
  c10::cuda::CUDAGuard guard;
};
#else
struct DeviceScope::Guard {};
#endif

bool onKernelDevice(const at::Tensor& tensor) {
#if defined(THINWIRE_KERNELS_EMULATED)
  return tensor.is_cpu();
#else
  return tensor.is_cuda();
#endif
}

bool cudaAvailable() { return deviceCount() > 0; }

int deviceCount() { return detail::deviceCount(); }

void check(int error, const char* what) {
  if (error != 0) {
    TW_THROW(Error, "CUDA error in ", what, ": ", detail::errorString(error),
             " (the device may be in an unrecoverable state; restart the process)");
  }
}

void checkCudaFloat(const at::Tensor& tensor, const char* what) {
  TW_CHECK(tensor.defined(), what, " is undefined");
  TW_CHECK(onKernelDevice(tensor) && tensor.scalar_type() == at::kFloat && tensor.is_contiguous(),
           what, " must be a contiguous float32 CUDA tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (not contiguous)");
}

DeviceScope::DeviceScope(const at::Tensor& tensor) {
  TW_CHECK(tensor.defined() && onKernelDevice(tensor), "a CUDA kernel needs a CUDA tensor, got ",
           tensor.defined() ? tensor.toString() : std::string("an undefined tensor"));
#if defined(THINWIRE_TORCH_CUDA)
  guard_ = std::make_unique<Guard>(tensor.device());
  stream_ = c10::cuda::getCurrentCUDAStream(tensor.device().index()).stream();
#endif
}

DeviceScope::~DeviceScope() = default;

void synchronizeDevice() { check(detail::synchronizeDevice(), "synchronizeDevice"); }

void deviceCopy(const at::Tensor& source, at::Tensor& destination) {
  TW_CHECK(source.is_contiguous() && destination.is_contiguous() &&
               source.nbytes() == destination.nbytes(),
           "deviceCopy needs contiguous tensors of the same byte size, got ", source.nbytes(),
           " and ", destination.nbytes(), " bytes");
  DeviceScope scope(source);
  check(detail::copyDeviceToDevice(destination.data_ptr(), source.data_ptr(),
                                   static_cast<int64_t>(source.nbytes()), scope.stream()),
        "deviceCopy");
}

}  // namespace thinwire::kernels
