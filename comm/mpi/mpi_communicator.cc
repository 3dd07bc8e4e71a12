#include "comm/mpi/mpi_communicator.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <mpi.h>
#include <sys/prctl.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <iostream>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/collective_checks.h"
#include "comm/mpi/mpi_check.h"

namespace thinwire::comm {
namespace {

// Note [16-bit reductions]
// MPI has no float16/bfloat16 types, and predefined ops cannot reduce derived datatypes, so both
// travel as a contiguous 2-byte type and are reduced by user-defined ops that widen each pair to
// float, combine, and round back. (Reduction order inside MPI is the library's choice, so results
// may differ from the local backend's rank-order sum in the last bit for inexact values.)
struct AddFloat {
  float operator()(float a, float b) const { return a + b; }
};
struct MaxFloat {
  float operator()(float a, float b) const { return (a > b || std::isnan(a)) ? a : b; }
};
struct MinFloat {
  float operator()(float a, float b) const { return (a < b || std::isnan(a)) ? a : b; }
};

template <typename T, typename Combine>
void combine16(void* in, void* inout, int* length, MPI_Datatype* /*datatype*/) {
  const T* source = static_cast<const T*>(in);
  T* target = static_cast<T*>(inout);
  Combine combine;
  for (int i = 0; i < *length; ++i) {
    target[i] = T(combine(static_cast<float>(source[i]), static_cast<float>(target[i])));
  }
}

int toMpiCount(const char* op, const char* what, int64_t value) {
  TW_CHECK(value <= INT_MAX, op, ": ", what, " = ", value,
           " does not fit MPI's int count, expected <= ", INT_MAX);
  return static_cast<int>(value);
}

// Converts counts and their offsets to MPI's int arrays; InvalidArgument if any does not fit.
void toMpiCounts(const char* op,
                 const std::vector<int64_t>& counts,
                 std::vector<int>& mpiCounts,
                 std::vector<int>& mpiOffsets) {
  mpiCounts.resize(counts.size());
  mpiOffsets.resize(counts.size());
  int64_t offset = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    mpiCounts[r] = toMpiCount(op, "a count", counts[r]);
    mpiOffsets[r] = toMpiCount(op, "a block offset", offset);
    offset += counts[r];
  }
}

// MPI forbids send/receive buffers that alias; copy the input when the caller's do.
at::Tensor separateFrom(const at::Tensor& input, const at::Tensor& output) {
  return overlaps(input, output) ? input.clone() : input;
}

}  // namespace

struct MpiCommunicator::Handles {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Datatype twoBytes = MPI_DATATYPE_NULL;
  MPI_Op halfSum = MPI_OP_NULL, halfMax = MPI_OP_NULL, halfMin = MPI_OP_NULL;
  MPI_Op bfloatSum = MPI_OP_NULL, bfloatMax = MPI_OP_NULL, bfloatMin = MPI_OP_NULL;

  void create() {
    TW_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
    TW_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
    TW_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &twoBytes));
    TW_MPI_CHECK(MPI_Type_commit(&twoBytes));
    TW_MPI_CHECK(MPI_Op_create(&combine16<c10::Half, AddFloat>, 1, &halfSum));
    TW_MPI_CHECK(MPI_Op_create(&combine16<c10::Half, MaxFloat>, 1, &halfMax));
    TW_MPI_CHECK(MPI_Op_create(&combine16<c10::Half, MinFloat>, 1, &halfMin));
    TW_MPI_CHECK(MPI_Op_create(&combine16<c10::BFloat16, AddFloat>, 1, &bfloatSum));
    TW_MPI_CHECK(MPI_Op_create(&combine16<c10::BFloat16, MaxFloat>, 1, &bfloatMax));
    TW_MPI_CHECK(MPI_Op_create(&combine16<c10::BFloat16, MinFloat>, 1, &bfloatMin));
  }

  // Releases in reverse order of creation; never throws (runs in the destructor path).
  void release() noexcept {
    for (MPI_Op* op : {&bfloatMin, &bfloatMax, &bfloatSum, &halfMin, &halfMax, &halfSum}) {
      if (*op != MPI_OP_NULL) MPI_Op_free(op);
    }
    if (twoBytes != MPI_DATATYPE_NULL) MPI_Type_free(&twoBytes);
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }

  MPI_Datatype datatype(at::ScalarType dtype) const {
    switch (dtype) {
      case at::kFloat:
        return MPI_FLOAT;
      case at::kHalf:
      case at::kBFloat16:
        return twoBytes;
      case at::kInt:
        return MPI_INT32_T;
      case at::kLong:
        return MPI_INT64_T;
      case at::kByte:
        return MPI_UINT8_T;
      default:
        TW_THROW(InvalidArgument, "no MPI datatype for dtype ", dtype);
    }
  }

  MPI_Op reduction(ReduceOp op, at::ScalarType dtype) const {
    const bool half = dtype == at::kHalf;
    const bool bfloat = dtype == at::kBFloat16;
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAverage:
        return half ? halfSum : bfloat ? bfloatSum : MPI_SUM;
      case ReduceOp::kMax:
        return half ? halfMax : bfloat ? bfloatMax : MPI_MAX;
      case ReduceOp::kMin:
        return half ? halfMin : bfloat ? bfloatMin : MPI_MIN;
    }
    TW_THROW(InvalidArgument, "unknown ReduceOp value ", static_cast<int>(op));
  }
};

MpiCommunicator::MpiCommunicator(std::shared_ptr<MpiEnvironment> environment,
                                 const MpiCommunicatorOptions& options)
    : environment_(std::move(environment)),
      options_(options),
      handles_(std::make_unique<Handles>()),
      queue_(OpQueueOptions{.name = "mpi", .errorRank = -1}) {
  TW_CHECK(environment_ != nullptr,
           "MpiCommunicator: environment is null, expected a live "
           "MpiEnvironment");
  int before = environment_->liveCommunicators_.fetch_add(1);
  if (before > 0 && !environment_->threadMultiple()) {
    environment_->liveCommunicators_.fetch_sub(1);
    TW_THROW(CommError,
             "MpiCommunicator: a second live communicator needs MPI_THREAD_MULTIPLE, "
             "but MPI provides only MPI_THREAD_SERIALIZED (",
             MpiEnvironment::libraryVersion(), ")");
  }
  try {
    queue_.runSync("MPI communicator setup", [this] {
      try {
        handles_->create();
      } catch (...) {
        handles_->release();
        throw;
      }
      TW_MPI_CHECK(MPI_Comm_rank(handles_->comm, &rank_));
      TW_MPI_CHECK(MPI_Comm_size(handles_->comm, &worldSize_));
      setErrorRank(rank_);
    });
  } catch (...) {
    environment_->liveCommunicators_.fetch_sub(1);
    throw;
  }
}

MpiCommunicator::~MpiCommunicator() {
  try {
    queue_.runSync("MPI communicator teardown", [this] { handles_->release(); });
  } catch (const std::exception& e) {
    std::cerr << "thinwire: rank " << rank_ << ": MPI communicator teardown failed: " << e.what()
              << "\n";
  }
  queue_.stop();
  environment_->liveCommunicators_.fetch_sub(1);
}

std::unique_ptr<Work> MpiCommunicator::allreduce(at::Tensor& inout,
                                                 const AllreduceOptions& options) {
  checkAllreduceArgs(inout, options.op);
  int count = toMpiCount("allreduce", "inout.numel()", inout.numel());
  std::string what =
      describeCollective("allreduce(" + toString(options.op) + ")", sequence_++, inout);
  const bool ring = options_.ringMinBytes > 0 && worldSize_ > 1 &&
                    inout.scalar_type() == at::kFloat &&
                    (options.op == ReduceOp::kSum || options.op == ReduceOp::kAverage) &&
                    inout.numel() * 4 >= options_.ringMinBytes && inout.numel() >= worldSize_;
  return queue_.submit(what, [this, inout, options, count, ring]() mutable {
    if (ring) {
      ringAllreduce(inout);
    } else {
      MPI_Request request;
      TW_MPI_CHECK(MPI_Iallreduce(
          MPI_IN_PLACE, inout.data_ptr(), count, handles_->datatype(inout.scalar_type()),
          handles_->reduction(options.op, inout.scalar_type()), handles_->comm, &request));
      waitPolitely(&request, 1);
    }
    if (options.op == ReduceOp::kAverage) inout.div_(worldSize_);
  });
}

// Note [Ring allreduce]
// Open MPI 4.1's fixed decision picks recursive-doubling-style algorithms for 1-64 MB float
// sums on 4 ranks; over one TCP link per host those reached 0.06-0.07 GB/s busbw where a ring
// reached 0.10 at 1 Gbit/s (docs/benchmarks.md), and gradient buckets live in exactly that range.
// The ring is the bandwidth-optimal schedule: the buffer is cut into n nearly equal chunks; in
// n-1 reduce-scatter steps every rank sends one chunk to its right neighbour, receives one from
// its left and adds it in, after which rank r owns the full sum of chunk (r+1) mod n; n-1
// allgather steps then circulate the finished chunks. Every rank sends 2(n-1)/n of the buffer,
// every link carries the same load, and all ranks end with bit-identical results because each
// finished chunk is computed once and copied. Summation order within a chunk is fixed by the
// ring position, so results are deterministic for a given world size.
// Note [Ring segments]
// A message above Open MPI's TCP eager limit (64 KiB by default) goes by rendezvous: the sender
// waits for the receiver's acknowledgement before the data moves. Behind a shaped link that
// round trip waits in the same queue as the data, and a ring of 1 MB messages measured at half
// the line rate with 2 hosts. On a slow link the ring therefore moves every chunk as 32 KiB
// segments, sent eagerly; MPI's non-overtaking rule keeps them in order on the one (source,
// tag) pair. On a fast link the per-message cost dominates instead (loopback TCP with ranks
// sharing cores: 0.170 s per fmnist-mlp step with 1 MiB segments, 0.196-0.218 s with 32 KiB),
// so the first kMeasureRings rings of at least kMeasureMinBytes (32 KiB segments) measure their
// throughput, and the fastest of them fixes the segment size for the communicator's life (the
// very first ring also pays for connection set-up): 1 MiB when every rank saw more than
// kFastLinkBytesPerSecond of bus bandwidth (agreed once with a one-integer MPI_Allreduce, since
// all ranks must cut the same way; agreeing after every ring would put a barrier between
// gradient buckets), 32 KiB otherwise. Segmenting never changes the result (each element is summed
// in ring order).
constexpr int kSmallSegmentFloats = 8192;
constexpr int kLargeSegmentFloats = 262144;
constexpr double kFastLinkBytesPerSecond = 250e6;  // 2 Gbit/s
constexpr int64_t kMeasureMinBytes = int64_t{4} << 20;
constexpr int kMeasureRings = 4;

void MpiCommunicator::ringAllreduce(at::Tensor& inout) {
  const int n = worldSize_;
  const int64_t total = inout.numel();
  float* data = inout.data_ptr<float>();
  std::vector<int64_t> begin(n + 1, 0);
  for (int c = 0; c < n; ++c) begin[c + 1] = begin[c] + total / n + (c < total % n ? 1 : 0);
  const int right = (rank_ + 1) % n;
  const int left = (rank_ + n - 1) % n;
  constexpr int kTag = 0x7477;  // the private communicator carries no other point-to-point
  const auto started = std::chrono::steady_clock::now();
  const int segment = ringSegmentFloats_;
  auto chunk = [n](int c) { return ((c % n) + n) % n; };
  auto count = [&begin](int c) { return static_cast<int>(begin[c + 1] - begin[c]); };
  auto segments = [&count, segment](int c) { return (count(c) + segment - 1) / segment; };
  auto length = [&count, segment](int c, int j) {
    return std::min(segment, count(c) - j * segment);
  };
  auto post = [&](bool isSend, float* buffer, int elements, std::vector<MPI_Request>& into) {
    into.emplace_back();
    if (isSend) {
      TW_MPI_CHECK(
          MPI_Isend(buffer, elements, MPI_FLOAT, right, kTag, handles_->comm, &into.back()));
    } else {
      TW_MPI_CHECK(
          MPI_Irecv(buffer, elements, MPI_FLOAT, left, kTag, handles_->comm, &into.back()));
    }
  };

  // Reduce-scatter, pipelined: every step's receives are posted up front into their own scratch
  // rows; each segment is added in as soon as it arrives and immediately forwarded as the next
  // step's segment, so the links never wait for a whole chunk (Note [Ring allreduce]).
  const int64_t maxChunk = begin[1] - begin[0];
  ringScratch_.resize(static_cast<size_t>(std::max<int64_t>(1, (n - 1) * maxChunk)));
  std::vector<std::vector<MPI_Request>> rsReceives(n - 1);
  for (int step = 0; step < n - 1; ++step) {
    const int c = chunk(rank_ - step - 1);
    float* row = ringScratch_.data() + step * maxChunk;
    for (int j = 0; j < segments(c); ++j)
      post(false, row + j * segment, length(c, j), rsReceives[step]);
  }
  std::vector<MPI_Request> rsSends;  // read the chunks the allgather later receives into
  std::vector<MPI_Request> agSends;  // read only chunk rank+1, which nothing receives into
  {
    const int c = chunk(rank_);
    for (int j = 0; j < segments(c); ++j)
      post(true, data + begin[c] + j * segment, length(c, j), rsSends);
  }
  for (int step = 0; step < n - 1; ++step) {
    const int c = chunk(rank_ - step - 1);
    const float* row = ringScratch_.data() + step * maxChunk;
    for (int j = 0; j < segments(c); ++j) {
      waitPolitely(&rsReceives[step][j], 1);
      float* sum = data + begin[c] + j * segment;
      const float* in = row + j * segment;
      const int elements = length(c, j);
      for (int i = 0; i < elements; ++i) sum[i] += in[i];
      // Step s+1 sends the chunk step s just reduced; after the last step it is complete and
      // starts the allgather.
      post(true, sum, elements, step + 1 < n - 1 ? rsSends : agSends);
    }
  }
  // Allgather, pipelined the same way, receiving straight into place. Its receives overwrite
  // chunks that reduce-scatter sends read, so they are posted only once those sends completed
  // (earlier arrivals wait in MPI as unexpected messages, in order).
  waitPolitely(rsSends.data(), static_cast<int>(rsSends.size()));
  std::vector<std::vector<MPI_Request>> agReceives(n - 1);
  for (int step = 0; step < n - 1; ++step) {
    const int c = chunk(rank_ - step);
    for (int j = 0; j < segments(c); ++j)
      post(false, data + begin[c] + j * segment, length(c, j), agReceives[step]);
  }
  for (int step = 0; step + 1 < n - 1; ++step) {
    const int c = chunk(rank_ - step);
    for (int j = 0; j < segments(c); ++j) {
      waitPolitely(&agReceives[step][j], 1);
      post(true, data + begin[c] + j * segment, length(c, j), agSends);
    }
  }
  waitPolitely(agReceives[n - 2].data(), static_cast<int>(agReceives[n - 2].size()));
  waitPolitely(agSends.data(), static_cast<int>(agSends.size()));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double busBytesPerSecond =
      4.0 * static_cast<double>(total) * 2.0 * (n - 1) / n / std::max(seconds, 1e-9);
  // Only transfers long enough to measure bandwidth (not latency) move the choice. Every rank
  // decides from the same sizes and must cut the next ring the same way: agree on the slowest
  // rank's view.
  if (ringSegmentsChosen_ || 4 * total < kMeasureMinBytes) return;
  fastestRingBytesPerSecond_ = std::max(fastestRingBytesPerSecond_, busBytesPerSecond);
  if (++measuredRings_ < kMeasureRings) return;
  int fast = fastestRingBytesPerSecond_ > kFastLinkBytesPerSecond ? 1 : 0;
  TW_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &fast, 1, MPI_INT, MPI_MIN, handles_->comm));
  ringSegmentFloats_ = fast == 1 ? kLargeSegmentFloats : kSmallSegmentFloats;
  ringSegmentsChosen_ = true;
}

// Note [Polite waits]
// Open MPI's blocking calls spin on the CPU until the data arrives. With more ranks than cores
// (4 ranks on 2 cores here; any over-subscribed node) a rank waiting on a slow link then takes
// cycles from the ranks still computing, and the step is as slow as the most starved rank. Every
// collective here is therefore started non-blocking (the ring's point-to-point messages, and
// MPI_I* for the others) and waited on by this function, which tests the requests and, after a
// short busy phase, sleeps between tests with a
// back-off capped at kMaxPause: the kernel keeps moving bytes through the socket buffers in the
// meantime, so on a 1 Gbit/s link a 200 us pause costs at most 25 KB of a step that moves MBs.
void MpiCommunicator::waitPolitely(void* requests, int count) {
  constexpr int kBusyTests = 32;
  constexpr std::chrono::microseconds kMaxPause{200};
  auto* all = static_cast<MPI_Request*>(requests);
  // Linux rounds sleeps up by the thread's timer slack (50 us by default), which would turn the
  // first short pauses into long ones on a fast link; 1 us keeps them as asked.
  thread_local const bool slackSet = prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0) == 0;
  (void)slackSet;
  std::chrono::microseconds pause{5};
  for (int tests = 0;; ++tests) {
    int done = 0;
    TW_MPI_CHECK(MPI_Testall(count, all, &done, MPI_STATUSES_IGNORE));
    if (done) return;
    if (tests < kBusyTests) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, kMaxPause);
  }
}

std::unique_ptr<Work> MpiCommunicator::allgather(const at::Tensor& input, at::Tensor& output) {
  checkAllgatherArgs(input, output, worldSize_);
  int count = toMpiCount("allgather", "input.numel()", input.numel());
  toMpiCount("allgather", "output.numel()", output.numel());
  std::string what = describeCollective("allgather", sequence_++, input);
  return queue_.submit(what, [this, input, output, count]() mutable {
    MPI_Datatype type = handles_->datatype(input.scalar_type());
    MPI_Request request;
    TW_MPI_CHECK(MPI_Iallgather(input.data_ptr(), count, type, output.data_ptr(), count, type,
                                handles_->comm, &request));
    waitPolitely(&request, 1);
  });
}

std::unique_ptr<Work> MpiCommunicator::allgatherv(const at::Tensor& input,
                                                  at::Tensor& output,
                                                  const std::vector<int64_t>& counts) {
  checkAllgathervArgs(input, output, counts, rank_, worldSize_);
  std::vector<int> mpiCounts;
  std::vector<int> mpiOffsets;
  toMpiCounts("allgatherv", counts, mpiCounts, mpiOffsets);
  std::string what = describeCollective("allgatherv", sequence_++, input);
  return queue_.submit(what, [this, input, output, mpiCounts, mpiOffsets]() mutable {
    MPI_Datatype type = handles_->datatype(input.scalar_type());
    MPI_Request request;
    TW_MPI_CHECK(MPI_Iallgatherv(input.data_ptr(), mpiCounts[rank_], type, output.data_ptr(),
                                 mpiCounts.data(), mpiOffsets.data(), type, handles_->comm,
                                 &request));
    waitPolitely(&request, 1);
  });
}

std::unique_ptr<Work> MpiCommunicator::allToAll(const at::Tensor& input,
                                                at::Tensor& output,
                                                const std::vector<int64_t>& sendCounts,
                                                const std::vector<int64_t>& recvCounts) {
  checkAllToAllArgs(input, output, sendCounts, recvCounts, worldSize_);
  std::vector<int> mpiSendCounts, mpiSendOffsets, mpiRecvCounts, mpiRecvOffsets;
  toMpiCounts("allToAll", sendCounts, mpiSendCounts, mpiSendOffsets);
  toMpiCounts("allToAll", recvCounts, mpiRecvCounts, mpiRecvOffsets);
  std::string what = describeCollective("allToAll", sequence_++, input);
  return queue_.submit(what, [this, input, output, mpiSendCounts, mpiSendOffsets, mpiRecvCounts,
                              mpiRecvOffsets]() mutable {
    at::Tensor source = separateFrom(input, output);
    MPI_Datatype type = handles_->datatype(input.scalar_type());
    MPI_Request request;
    TW_MPI_CHECK(MPI_Ialltoallv(source.data_ptr(), mpiSendCounts.data(), mpiSendOffsets.data(),
                                type, output.data_ptr(), mpiRecvCounts.data(),
                                mpiRecvOffsets.data(), type, handles_->comm, &request));
    waitPolitely(&request, 1);
  });
}

std::unique_ptr<Work> MpiCommunicator::reduceScatter(const at::Tensor& input,
                                                     at::Tensor& output,
                                                     const std::vector<int64_t>& counts,
                                                     const ReduceScatterOptions& options) {
  checkReduceScatterArgs(input, output, counts, options.op, rank_, worldSize_);
  std::vector<int> mpiCounts;
  std::vector<int> mpiOffsets;
  toMpiCounts("reduceScatter", counts, mpiCounts, mpiOffsets);
  toMpiCount("reduceScatter", "input.numel()", input.numel());
  std::string what =
      describeCollective("reduceScatter(" + toString(options.op) + ")", sequence_++, input);
  return queue_.submit(what, [this, input, output, options, mpiCounts]() mutable {
    at::Tensor source = separateFrom(input, output);
    MPI_Request request;
    TW_MPI_CHECK(MPI_Ireduce_scatter(source.data_ptr(), output.data_ptr(), mpiCounts.data(),
                                     handles_->datatype(input.scalar_type()),
                                     handles_->reduction(options.op, input.scalar_type()),
                                     handles_->comm, &request));
    waitPolitely(&request, 1);
    if (options.op == ReduceOp::kAverage) output.div_(worldSize_);
  });
}

std::unique_ptr<Work> MpiCommunicator::broadcast(at::Tensor& inout,
                                                 const BroadcastOptions& options) {
  checkBroadcastArgs(inout, options.root, worldSize_);
  int count = toMpiCount("broadcast", "inout.numel()", inout.numel());
  std::string what = describeCollective("broadcast", sequence_++, inout);
  return queue_.submit(what, [this, inout, options, count]() mutable {
    MPI_Request request;
    TW_MPI_CHECK(MPI_Ibcast(inout.data_ptr(), count, handles_->datatype(inout.scalar_type()),
                            options.root, handles_->comm, &request));
    waitPolitely(&request, 1);
  });
}

std::unique_ptr<Work> MpiCommunicator::barrier() {
  std::string what = "barrier #" + std::to_string(sequence_++);
  return queue_.submit(what, [this] {
    MPI_Request request;
    TW_MPI_CHECK(MPI_Ibarrier(handles_->comm, &request));
    waitPolitely(&request, 1);
  });
}

void MpiCommunicator::abort(const std::string& reason) noexcept {
  std::cerr << "thinwire: rank " << rank_ << "/" << worldSize_ << " aborts the MPI job: " << reason
            << std::endl;
  MPI_Comm comm = handles_->comm != MPI_COMM_NULL ? handles_->comm : MPI_COMM_WORLD;
  MPI_Abort(comm, 1);
}

}  // namespace thinwire::comm
