#include "comm/nccl/nccl_communicator.h"

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "comm/collective_checks.h"

#if defined(THINWIRE_TORCH_CUDA)
#include <c10/cuda/CUDAStream.h>
#endif

// Every NCCL / CUDA return code becomes a CommError at the call site, naming the call, the NCCL
// version and this rank (see the file comment of the header).
#define TW_NCCL_CHECK(call, rank, worldSize)                                              \
  do {                                                                                    \
    const ncclResult_t twNcclResult = (call);                                             \
    if (twNcclResult != ncclSuccess && twNcclResult != ncclInProgress) {                  \
      TW_THROW(CommError, #call, " failed on rank ", (rank), "/", (worldSize), " (NCCL ", \
               ::thinwire::comm::NcclCommunicator::ncclVersion(),                         \
               "): ", ncclGetErrorString(twNcclResult),                                   \
               "; the communicator is in an unknown "                                     \
               "state, abort and recreate it");                                           \
    }                                                                                     \
  } while (false)

#define TW_CUDA_CHECK(call, rank, worldSize)                                              \
  do {                                                                                    \
    const cudaError_t twCudaError = (call);                                               \
    if (twCudaError != cudaSuccess) {                                                     \
      TW_THROW(CommError, #call, " failed on rank ", (rank), "/", (worldSize), " (NCCL ", \
               ::thinwire::comm::NcclCommunicator::ncclVersion(), "): CUDA error ",       \
               cudaGetErrorName(twCudaError), ": ", cudaGetErrorString(twCudaError));     \
    }                                                                                     \
  } while (false)

namespace thinwire::comm {

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  int rank = 0;
  int worldSize = 1;
  int32_t* barrierScratch = nullptr;  // one device int for barrier()
};

namespace {

// The caller's stream that operations order against (Note [NCCL stream ordering]).
cudaStream_t callerStream(int device) {
#if defined(THINWIRE_TORCH_CUDA)
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return nullptr;  // the legacy default stream
#endif
}

ncclDataType_t ncclTypeOf(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return ncclFloat32;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kByte:
      return ncclUint8;
    default:
      TW_THROW(InvalidArgument, "NCCL has no type for dtype ", dtype);
  }
}

// Sums for staged tensors: the division happens on the host afterwards (exact contract).
ncclRedOp_t ncclOpOf(ReduceOp op, bool onDevice) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAverage:
      return onDevice ? ncclAvg : ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  TW_THROW(InvalidArgument, "unknown ReduceOp ", static_cast<int>(op));
}

bool sameMemory(const at::Tensor& a, const at::Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.nbytes() == b.nbytes();
}

// The asynchronous result of one NCCL operation: its completion event on the communicator's
// stream, plus what must happen on the host once it has fired (staged CPU tensors copied back).
class NcclWork : public Work {
 public:
  NcclWork(std::string description,
           cudaEvent_t done,
           ncclComm_t comm,
           int device,
           int rank,
           int worldSize,
           std::function<void()> onComplete)
      : description_(std::move(description)),
        done_(done),
        comm_(comm),
        device_(device),
        rank_(rank),
        worldSize_(worldSize),
        onComplete_(std::move(onComplete)) {}

  ~NcclWork() override {
    // The caller waits before dropping a Work (the contract); a dropped unfinished one still
    // must not free staging memory the device may write, so it finishes here, bounded.
    try {
      if (!isCompleted()) wait(kDefaultTimeout);
    } catch (const std::exception& e) {
      std::cerr << "thinwire: NcclWork for " << description_ << " dropped unfinished: " << e.what()
                << "\n";
    }
    cudaEventDestroy(done_);
  }

  bool isCompleted() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return poll();
  }

  void wait(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::microseconds(20);
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (poll()) break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        TW_THROW(TimeoutError, description_, " did not complete within ", timeout.count(),
                 " ms on rank ", rank_, "/", worldSize_, " (NCCL ", NcclCommunicator::ncclVersion(),
                 "; a peer rank may have failed or stalled; raise comm.timeout_s if the link is "
                 "just slow)");
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(error_);
    // Later work on the caller's stream sees the result (Note [NCCL stream ordering]).
    cudaSetDevice(device_);
    TW_CUDA_CHECK(cudaStreamWaitEvent(callerStream(device_), done_, 0), rank_, worldSize_);
  }

 private:
  // With mutex_ held: true once finished (successfully or with a stored error).
  bool poll() {
    if (completed_) return true;
    cudaSetDevice(device_);
    const cudaError_t state = cudaEventQuery(done_);
    if (state == cudaErrorNotReady) {
      ncclResult_t asyncError = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &asyncError) == ncclSuccess && asyncError != ncclSuccess &&
          asyncError != ncclInProgress) {
        fail(std::string("NCCL asynchronous error: ") + ncclGetErrorString(asyncError));
        return true;
      }
      return false;
    }
    if (state != cudaSuccess) {
      fail(std::string("CUDA error ") + cudaGetErrorName(state) + ": " + cudaGetErrorString(state));
      return true;
    }
    completed_ = true;
    try {
      if (onComplete_) onComplete_();
    } catch (...) {
      error_ = std::current_exception();
    }
    onComplete_ = nullptr;
    return true;
  }

  void fail(const std::string& what) {
    try {
      TW_THROW(CommError, description_, " failed on rank ", rank_, "/", worldSize_, " (NCCL ",
               NcclCommunicator::ncclVersion(), "): ", what,
               "; the communicator is in an unknown state, abort and recreate it");
    } catch (...) {
      error_ = std::current_exception();
    }
    completed_ = true;
    onComplete_ = nullptr;
  }

  std::string description_;
  cudaEvent_t done_;
  ncclComm_t comm_;
  int device_;
  int rank_;
  int worldSize_;
  std::function<void()> onComplete_;
  std::mutex mutex_;
  bool completed_ = false;
  std::exception_ptr error_;
};

}  // namespace

std::string NcclCommunicator::ncclVersion() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "unknown";
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9.
  return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100);
}

NcclCommunicator::NcclCommunicator(const NcclCommunicatorOptions& options) : options_(options) {
  ncclUniqueId id;
  TW_NCCL_CHECK(ncclGetUniqueId(&id), 0, 1);
  std::vector<uint8_t> bytes(sizeof(id));
  std::memcpy(bytes.data(), &id, sizeof(id));
  initialise(bytes);
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> bootstrap,
                                   const NcclCommunicatorOptions& options)
    : options_(options), bootstrap_(std::move(bootstrap)) {
  TW_CHECK(bootstrap_ != nullptr, "NcclCommunicator: the bootstrap communicator is null");
  rank_ = bootstrap_->rank();
  worldSize_ = bootstrap_->worldSize();
  at::Tensor id = at::zeros({static_cast<int64_t>(sizeof(ncclUniqueId))}, at::kByte);
  if (rank_ == 0) {
    ncclUniqueId created;
    TW_NCCL_CHECK(ncclGetUniqueId(&created), rank_, worldSize_);
    std::memcpy(id.data_ptr<uint8_t>(), &created, sizeof(created));
  }
  bootstrap_->broadcast(id, {.root = 0})->wait(options_.timeout);
  initialise(std::vector<uint8_t>(id.data_ptr<uint8_t>(), id.data_ptr<uint8_t>() + id.numel()));
}

NcclCommunicator::NcclCommunicator(Store& store,
                                   int rank,
                                   int worldSize,
                                   const NcclCommunicatorOptions& options)
    : options_(options), rank_(rank), worldSize_(worldSize) {
  TW_CHECK(worldSize >= 1 && rank >= 0 && rank < worldSize, "NcclCommunicator: rank ", rank,
           " outside a world of ", worldSize);
  std::string bytes;
  if (rank == 0) {
    ncclUniqueId created;
    TW_NCCL_CHECK(ncclGetUniqueId(&created), rank_, worldSize_);
    bytes.assign(reinterpret_cast<const char*>(&created), sizeof(created));
    store.set(options_.storeKey, bytes);
  } else {
    bytes = store.get(options_.storeKey, options_.timeout);
  }
  TW_CHECK(bytes.size() == sizeof(ncclUniqueId), "NcclCommunicator: the store key '",
           options_.storeKey, "' holds ", bytes.size(), " bytes, expected an ncclUniqueId of ",
           sizeof(ncclUniqueId));
  initialise(std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

void NcclCommunicator::initialise(const std::vector<uint8_t>& uniqueId) {
  auto state = std::make_unique<State>();
  state->device = options_.device;
  state->rank = rank_;
  state->worldSize = worldSize_;
  int devices = 0;
  TW_CUDA_CHECK(cudaGetDeviceCount(&devices), rank_, worldSize_);
  TW_CHECK(options_.device >= 0 && options_.device < devices, "NcclCommunicator: device ",
           options_.device, " outside the ", devices, " visible CUDA devices");
  TW_CUDA_CHECK(cudaSetDevice(options_.device), rank_, worldSize_);
  TW_CUDA_CHECK(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking), rank_,
                worldSize_);
  TW_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&state->barrierScratch), sizeof(int32_t)),
                rank_, worldSize_);
  ncclUniqueId id;
  std::memcpy(&id, uniqueId.data(), sizeof(id));
  // Blocking until every rank has joined; the rendezvous before it is what is bounded.
  TW_NCCL_CHECK(ncclCommInitRank(&state->comm, worldSize_, id, rank_), rank_, worldSize_);
  state_ = std::move(state);
}

NcclCommunicator::~NcclCommunicator() {
  if (!state_) return;
  cudaSetDevice(state_->device);
  if (state_->comm != nullptr) {
    // Queued work first (bounded), then the handles in reverse order of creation.
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    while (cudaStreamQuery(state_->stream) == cudaErrorNotReady &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (cudaStreamQuery(state_->stream) == cudaErrorNotReady) {
      std::cerr << "thinwire: NcclCommunicator rank " << rank_
                << " destroyed with operations still running; aborting the NCCL communicator\n";
      ncclCommAbort(state_->comm);
    } else {
      ncclCommDestroy(state_->comm);
    }
  }
  cudaFree(state_->barrierScratch);
  cudaStreamDestroy(state_->stream);
}

struct NcclCommunicator::Staged {
  void* hostPinned = nullptr;  // CPU tensors: the bytes on their way through pinned memory
  void* device = nullptr;      // what NCCL reads or writes
  bool ownsDevice = false;     // a staging buffer (freed on the stream after the operation)
};

std::unique_ptr<Work> NcclCommunicator::run(
    const std::string& description,
    std::vector<at::Tensor> inputs,
    std::vector<at::Tensor> outputs,
    int64_t averageDivisor,
    const std::function<void(const std::vector<void*>&, const std::vector<void*>&)>& body) {
  for (const at::Tensor& t : inputs) {
    TW_CHECK(!t.is_cuda() || t.device().index() == options_.device, description, ": a tensor on ",
             t.device(), ", this rank's NCCL device is cuda:", options_.device);
  }
  for (const at::Tensor& t : outputs) {
    TW_CHECK(!t.is_cuda() || t.device().index() == options_.device, description, ": a tensor on ",
             t.device(), ", this rank's NCCL device is cuda:", options_.device);
  }
  State& s = *state_;
  TW_CUDA_CHECK(cudaSetDevice(s.device), rank_, worldSize_);
  cudaEvent_t ready = nullptr;
  TW_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), rank_, worldSize_);
  TW_CUDA_CHECK(cudaEventRecord(ready, callerStream(s.device)), rank_, worldSize_);
  TW_CUDA_CHECK(cudaStreamWaitEvent(s.stream, ready, 0), rank_, worldSize_);
  cudaEventDestroy(ready);

  auto stage = std::make_shared<std::vector<Staged>>(inputs.size() + outputs.size());
  std::vector<void*> in(inputs.size());
  std::vector<void*> out(outputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& t = inputs[i];
    Staged& staged = (*stage)[i];
    const size_t bytes = t.nbytes();
    bool overlapsOutput = false;
    for (const at::Tensor& o : outputs) {
      overlapsOutput = overlapsOutput || (overlaps(t, o) && !sameMemory(t, o));
    }
    if (bytes == 0) {
      in[i] = nullptr;
    } else if (t.is_cuda() && !overlapsOutput) {
      in[i] = t.data_ptr();
    } else {
      TW_CUDA_CHECK(cudaMallocAsync(&staged.device, bytes, s.stream), rank_, worldSize_);
      staged.ownsDevice = true;
      if (t.is_cuda()) {
        TW_CUDA_CHECK(
            cudaMemcpyAsync(staged.device, t.data_ptr(), bytes, cudaMemcpyDeviceToDevice, s.stream),
            rank_, worldSize_);
      } else {
        // Pinned, so the upload is asynchronous and this call never blocks on queued work.
        TW_CUDA_CHECK(cudaHostAlloc(&staged.hostPinned, bytes, cudaHostAllocDefault), rank_,
                      worldSize_);
        std::memcpy(staged.hostPinned, t.data_ptr(), bytes);
        TW_CUDA_CHECK(cudaMemcpyAsync(staged.device, staged.hostPinned, bytes,
                                      cudaMemcpyHostToDevice, s.stream),
                      rank_, worldSize_);
      }
      in[i] = staged.device;
    }
  }
  for (size_t o = 0; o < outputs.size(); ++o) {
    const at::Tensor& t = outputs[o];
    Staged& staged = (*stage)[inputs.size() + o];
    const size_t bytes = t.nbytes();
    out[o] = nullptr;
    if (bytes == 0) continue;
    if (t.is_cuda()) {
      out[o] = t.data_ptr();
      continue;
    }
    for (size_t i = 0; i < inputs.size(); ++i) {  // in place: the input's staging buffer
      if (sameMemory(inputs[i], t)) out[o] = in[i];
    }
    if (out[o] == nullptr) {
      TW_CUDA_CHECK(cudaMallocAsync(&staged.device, bytes, s.stream), rank_, worldSize_);
      staged.ownsDevice = true;
      out[o] = staged.device;
    }
    TW_CUDA_CHECK(cudaHostAlloc(&staged.hostPinned, bytes, cudaHostAllocDefault), rank_,
                  worldSize_);
  }

  body(in, out);

  for (size_t o = 0; o < outputs.size(); ++o) {
    Staged& staged = (*stage)[inputs.size() + o];
    if (staged.hostPinned != nullptr) {
      TW_CUDA_CHECK(cudaMemcpyAsync(staged.hostPinned, out[o], outputs[o].nbytes(),
                                    cudaMemcpyDeviceToHost, s.stream),
                    rank_, worldSize_);
    }
  }
  for (Staged& staged : *stage) {
    if (staged.ownsDevice) TW_CUDA_CHECK(cudaFreeAsync(staged.device, s.stream), rank_, worldSize_);
  }
  cudaEvent_t done = nullptr;
  TW_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), rank_, worldSize_);
  TW_CUDA_CHECK(cudaEventRecord(done, s.stream), rank_, worldSize_);

  const size_t inputCount = inputs.size();
  auto onComplete = [stage, outputs = std::move(outputs), inputCount, averageDivisor] {
    for (size_t o = 0; o < outputs.size(); ++o) {
      const Staged& staged = (*stage)[inputCount + o];
      if (staged.hostPinned == nullptr) continue;
      at::Tensor target = outputs[o];
      std::memcpy(target.data_ptr(), staged.hostPinned, target.nbytes());
      if (averageDivisor > 1) target.div_(averageDivisor);
    }
    for (const Staged& staged : *stage) {
      if (staged.hostPinned != nullptr) cudaFreeHost(staged.hostPinned);
    }
  };
  return std::make_unique<NcclWork>(description, done, s.comm, s.device, rank_, worldSize_,
                                    std::move(onComplete));
}

std::unique_ptr<Work> NcclCommunicator::allreduce(at::Tensor& inout,
                                                  const AllreduceOptions& options) {
  checkAllreduceArgs(inout, options.op, /*allowCuda=*/true);
  const bool onDevice = inout.is_cuda();
  const ncclDataType_t type = ncclTypeOf(inout.scalar_type());
  const ncclRedOp_t op = ncclOpOf(options.op, onDevice);
  const int64_t count = inout.numel();
  State& s = *state_;
  return run(describeCollective("allreduce", sequence_++, inout), {inout}, {inout},
             options.op == ReduceOp::kAverage && !onDevice ? worldSize_ : 1,
             [&](const std::vector<void*>& in, const std::vector<void*>& out) {
               if (count == 0) return;
               TW_NCCL_CHECK(ncclAllReduce(in[0], out[0], count, type, op, s.comm, s.stream), rank_,
                             worldSize_);
             });
}

std::unique_ptr<Work> NcclCommunicator::allgather(const at::Tensor& input, at::Tensor& output) {
  checkAllgatherArgs(input, output, worldSize_, /*allowCuda=*/true);
  const ncclDataType_t type = ncclTypeOf(input.scalar_type());
  const int64_t count = input.numel();
  State& s = *state_;
  return run(describeCollective("allgather", sequence_++, input), {input}, {output}, 1,
             [&](const std::vector<void*>& in, const std::vector<void*>& out) {
               if (count == 0) return;
               TW_NCCL_CHECK(ncclAllGather(in[0], out[0], count, type, s.comm, s.stream), rank_,
                             worldSize_);
             });
}

std::unique_ptr<Work> NcclCommunicator::allgatherv(const at::Tensor& input,
                                                   at::Tensor& output,
                                                   const std::vector<int64_t>& counts) {
  checkAllgathervArgs(input, output, counts, rank_, worldSize_, /*allowCuda=*/true);
  const ncclDataType_t type = ncclTypeOf(input.scalar_type());
  const std::vector<int64_t> offsets = offsetsOf(counts);
  const int64_t elementSize = static_cast<int64_t>(input.element_size());
  State& s = *state_;
  return run(describeCollective("allgatherv", sequence_++, input), {input}, {output}, 1,
             [&](const std::vector<void*>& in, const std::vector<void*>& out) {
               TW_NCCL_CHECK(ncclGroupStart(), rank_, worldSize_);
               for (int r = 0; r < worldSize_; ++r) {
                 if (counts[r] == 0) continue;
                 char* target = static_cast<char*>(out[0]) + offsets[r] * elementSize;
                 TW_NCCL_CHECK(ncclBroadcast(r == rank_ ? in[0] : target, target, counts[r], type,
                                             r, s.comm, s.stream),
                               rank_, worldSize_);
               }
               TW_NCCL_CHECK(ncclGroupEnd(), rank_, worldSize_);
             });
}

std::unique_ptr<Work> NcclCommunicator::allToAll(const at::Tensor& input,
                                                 at::Tensor& output,
                                                 const std::vector<int64_t>& sendCounts,
                                                 const std::vector<int64_t>& recvCounts) {
  checkAllToAllArgs(input, output, sendCounts, recvCounts, worldSize_, /*allowCuda=*/true);
  const ncclDataType_t type = ncclTypeOf(input.scalar_type());
  const std::vector<int64_t> sendOffsets = offsetsOf(sendCounts);
  const std::vector<int64_t> recvOffsets = offsetsOf(recvCounts);
  const int64_t elementSize = static_cast<int64_t>(input.element_size());
  State& s = *state_;
  return run(
      describeCollective("allToAll", sequence_++, input), {input}, {output}, 1,
      [&](const std::vector<void*>& in, const std::vector<void*>& out) {
        // The rank's own block is a device copy: no NCCL call for a peer of itself.
        if (sendCounts[rank_] > 0) {
          TW_CUDA_CHECK(
              cudaMemcpyAsync(static_cast<char*>(out[0]) + recvOffsets[rank_] * elementSize,
                              static_cast<const char*>(in[0]) + sendOffsets[rank_] * elementSize,
                              sendCounts[rank_] * elementSize, cudaMemcpyDeviceToDevice, s.stream),
              rank_, worldSize_);
        }
        TW_NCCL_CHECK(ncclGroupStart(), rank_, worldSize_);
        for (int peer = 0; peer < worldSize_; ++peer) {
          if (peer == rank_) continue;
          if (sendCounts[peer] > 0) {
            TW_NCCL_CHECK(
                ncclSend(static_cast<const char*>(in[0]) + sendOffsets[peer] * elementSize,
                         sendCounts[peer], type, peer, s.comm, s.stream),
                rank_, worldSize_);
          }
          if (recvCounts[peer] > 0) {
            TW_NCCL_CHECK(ncclRecv(static_cast<char*>(out[0]) + recvOffsets[peer] * elementSize,
                                   recvCounts[peer], type, peer, s.comm, s.stream),
                          rank_, worldSize_);
          }
        }
        TW_NCCL_CHECK(ncclGroupEnd(), rank_, worldSize_);
      });
}

std::unique_ptr<Work> NcclCommunicator::reduceScatter(const at::Tensor& input,
                                                      at::Tensor& output,
                                                      const std::vector<int64_t>& counts,
                                                      const ReduceScatterOptions& options) {
  checkReduceScatterArgs(input, output, counts, options.op, rank_, worldSize_,
                         /*allowCuda=*/true);
  const bool onDevice = input.is_cuda() && output.is_cuda();
  const ncclDataType_t type = ncclTypeOf(input.scalar_type());
  const ncclRedOp_t op = ncclOpOf(options.op, onDevice);
  const std::vector<int64_t> offsets = offsetsOf(counts);
  const int64_t elementSize = static_cast<int64_t>(input.element_size());
  State& s = *state_;
  return run(describeCollective("reduceScatter", sequence_++, input), {input}, {output},
             options.op == ReduceOp::kAverage && !onDevice ? worldSize_ : 1,
             [&](const std::vector<void*>& in, const std::vector<void*>& out) {
               TW_NCCL_CHECK(ncclGroupStart(), rank_, worldSize_);
               for (int r = 0; r < worldSize_; ++r) {
                 if (counts[r] == 0) continue;
                 const char* block = static_cast<const char*>(in[0]) + offsets[r] * elementSize;
                 // recvbuff matters on the root only; elsewhere any valid device pointer.
                 void* target = r == rank_ ? out[0] : const_cast<char*>(block);
                 TW_NCCL_CHECK(ncclReduce(block, target, counts[r], type, op, r, s.comm, s.stream),
                               rank_, worldSize_);
               }
               TW_NCCL_CHECK(ncclGroupEnd(), rank_, worldSize_);
             });
}

std::unique_ptr<Work> NcclCommunicator::broadcast(at::Tensor& inout,
                                                  const BroadcastOptions& options) {
  checkBroadcastArgs(inout, options.root, worldSize_, /*allowCuda=*/true);
  const ncclDataType_t type = ncclTypeOf(inout.scalar_type());
  const int64_t count = inout.numel();
  const int root = options.root;
  State& s = *state_;
  return run(describeCollective("broadcast", sequence_++, inout), {inout}, {inout}, 1,
             [&](const std::vector<void*>& in, const std::vector<void*>& out) {
               if (count == 0) return;
               TW_NCCL_CHECK(ncclBroadcast(in[0], out[0], count, type, root, s.comm, s.stream),
                             rank_, worldSize_);
             });
}

std::unique_ptr<Work> NcclCommunicator::barrier() {
  State& s = *state_;
  return run("barrier #" + std::to_string(sequence_++), {}, {}, 1,
             [&](const std::vector<void*>&, const std::vector<void*>&) {
               TW_NCCL_CHECK(ncclAllReduce(s.barrierScratch, s.barrierScratch, 1, ncclInt32,
                                           ncclSum, s.comm, s.stream),
                             rank_, worldSize_);
             });
}

void NcclCommunicator::abort(const std::string& reason) noexcept {
  std::cerr << "thinwire: rank " << rank_ << "/" << worldSize_ << " aborts (NCCL " << ncclVersion()
            << "): " << reason << std::endl;
  if (state_ && state_->comm != nullptr) ncclCommAbort(state_->comm);
  std::_Exit(1);
}

}  // namespace thinwire::comm
