// File: tests/comm/conformance_cases.h
//
// The backend conformance suite: test bodies that take a Communicator& and check every collective
// against a single-process reference that each rank computes itself from the deterministic
// per-rank inputs (rankInput). The same bodies run on the local backend (threads as ranks, world
// sizes 1, 2, 3, 4, 7) and on the MPI backend (mpiexec -n 1, 2, 3, 4, 7).
//
// Inputs are small integers (halves for floating dtypes), so every partial sum is exact in every
// dtype, float16 and bfloat16 included: the reference is exact whatever reduction order a backend
// uses, and results are compared exactly.
//
// Threading: a body is run by every rank at once, one thread (or process) per rank. Bodies use
// EXPECT_* only and issue every collective unconditionally, so a failed check on one rank never
// leaves the other ranks waiting in a collective it skipped.
//
// Example:
//   for (const ConformanceCase& c : conformanceCases()) c.run(comm);   // on every rank
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"

namespace thinwire::comm::testing {

inline constexpr std::chrono::milliseconds kTestTimeout{std::chrono::seconds(60)};

inline const std::vector<at::ScalarType>& allDtypes() {
  static const std::vector<at::ScalarType> dtypes = {at::kFloat, at::kHalf, at::kBFloat16,
                                                     at::kInt,   at::kLong, at::kByte};
  return dtypes;
}

inline std::vector<ReduceOp> opsFor(at::ScalarType dtype) {
  std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin};
  if (at::isFloatingType(dtype)) ops.push_back(ReduceOp::kAverage);
  return ops;
}

// Rank `rank`'s input: integers in [-8, 8] ([0, 16] for uint8), halved for floating dtypes.
// `salt` varies the pattern between calls of one test.
inline at::Tensor rankInput(int rank, int64_t numel, at::ScalarType dtype, int salt) {
  at::Tensor values = (at::arange(numel, at::kLong) * 7 + rank * 13 + salt * 5).remainder(17);
  if (dtype != at::kByte) values = values - 8;
  if (at::isFloatingType(dtype)) return (values.to(at::kDouble) * 0.5).to(dtype);
  return values.to(dtype);
}

// Elementwise reduction of `inputs` computed in double, cast to `dtype`; kAverage divides in the
// dtype afterwards, which is what every backend's contract promises (sum, then divide).
inline at::Tensor referenceReduce(const std::vector<at::Tensor>& inputs,
                                  ReduceOp op,
                                  at::ScalarType dtype) {
  at::Tensor result = inputs.front().to(at::kDouble);
  for (size_t r = 1; r < inputs.size(); ++r) {
    at::Tensor next = inputs[r].to(at::kDouble);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAverage:
        result = result + next;
        break;
      case ReduceOp::kMax:
        result = at::maximum(result, next);
        break;
      case ReduceOp::kMin:
        result = at::minimum(result, next);
        break;
    }
  }
  result = result.to(dtype);
  if (op == ReduceOp::kAverage) result.div_(static_cast<int64_t>(inputs.size()));
  return result;
}

inline std::string describe(const Communicator& comm, const std::string& what) {
  return "rank " + std::to_string(comm.rank()) + "/" + std::to_string(comm.worldSize()) + " " +
         what;
}

// Exact comparison of values, dtype and element count.
inline void expectSameValues(const at::Tensor& actual,
                             const at::Tensor& expected,
                             const std::string& context) {
  EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << context;
  ASSERT_EQ(actual.numel(), expected.numel()) << context;
  at::Tensor a = actual.reshape({-1}).to(at::kDouble);
  at::Tensor e = expected.reshape({-1}).to(at::kDouble);
  if (at::equal(a, e)) return;
  int64_t first = at::nonzero(a != e).select(1, 0)[0].item<int64_t>();
  ADD_FAILURE() << context << ": element " << first << " is " << a[first].item<double>()
                << ", expected " << e[first].item<double>();
}

// Waits with the test timeout, turning an exception into a test failure (and no further throw),
// so that the rank keeps issuing the remaining collectives in step with the others.
inline bool waitFor(std::unique_ptr<Work> work, const std::string& context) {
  try {
    work->wait(kTestTimeout);
    return true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << context << ": wait() threw " << e.what();
    return false;
  }
}

inline void allreduceMatchesReferenceForEveryDtypeAndOp(Communicator& comm) {
  const int n = comm.worldSize();
  int salt = 0;
  for (at::ScalarType dtype : allDtypes()) {
    for (ReduceOp op : opsFor(dtype)) {
      for (std::vector<int64_t> shape :
           {std::vector<int64_t>{0}, std::vector<int64_t>{1}, std::vector<int64_t>{13},
            std::vector<int64_t>{3, 5}, std::vector<int64_t>{1031}}) {
        ++salt;
        int64_t numel = 1;
        for (int64_t size : shape) numel *= size;
        at::Tensor tensor = rankInput(comm.rank(), numel, dtype, salt).reshape(shape);
        std::string context =
            describe(comm, "allreduce(" + toString(op) + ") of " + std::to_string(numel) + " " +
                               std::string(c10::toString(dtype)));
        waitFor(comm.allreduce(tensor, {.op = op}), context);
        std::vector<at::Tensor> inputs;
        for (int r = 0; r < n; ++r) inputs.push_back(rankInput(r, numel, dtype, salt));
        expectSameValues(tensor, referenceReduce(inputs, op, dtype), context);
      }
    }
  }
}

inline void allreduceOfLargeTensorsMatchesReference(Communicator& comm) {
  const int n = comm.worldSize();
  const int64_t numel = 300007;  // large enough for MPI's segmented algorithms, odd on purpose
  int salt = 100;
  for (auto [dtype, op] :
       {std::pair{at::kFloat, ReduceOp::kSum}, std::pair{at::kFloat, ReduceOp::kAverage},
        std::pair{at::kBFloat16, ReduceOp::kSum}, std::pair{at::kHalf, ReduceOp::kMax},
        std::pair{at::kLong, ReduceOp::kMin}}) {
    ++salt;
    at::Tensor tensor = rankInput(comm.rank(), numel, dtype, salt);
    std::string context = describe(
        comm, "large allreduce(" + toString(op) + ") of " + std::string(c10::toString(dtype)));
    waitFor(comm.allreduce(tensor, {.op = op}), context);
    std::vector<at::Tensor> inputs;
    for (int r = 0; r < n; ++r) inputs.push_back(rankInput(r, numel, dtype, salt));
    expectSameValues(tensor, referenceReduce(inputs, op, dtype), context);
  }
}

inline void allgatherConcatenatesInRankOrder(Communicator& comm) {
  const int n = comm.worldSize();
  int salt = 200;
  for (at::ScalarType dtype : allDtypes()) {
    for (int64_t numel : {0, 1, 5}) {
      ++salt;
      at::Tensor input = rankInput(comm.rank(), numel, dtype, salt);
      at::Tensor output = at::full({n * numel}, 99, input.options());
      std::string context = describe(
          comm, "allgather of " + std::to_string(numel) + " " + std::string(c10::toString(dtype)));
      waitFor(comm.allgather(input, output), context);
      std::vector<at::Tensor> parts;
      for (int r = 0; r < n; ++r) parts.push_back(rankInput(r, numel, dtype, salt));
      expectSameValues(output, at::cat(parts), context);
    }
  }
}

inline void allgathervHandlesUnequalAndEmptyBlocks(Communicator& comm) {
  const int n = comm.worldSize();
  int salt = 300;
  std::vector<std::vector<int64_t>> patterns;
  std::vector<int64_t> unequal, empty(n, 0);
  for (int r = 0; r < n; ++r) unequal.push_back((r * 3 + 1) % 4);  // 1, 0, 3, 2, 1, 0, 3
  patterns.push_back(unequal);
  patterns.push_back(empty);
  for (at::ScalarType dtype : allDtypes()) {
    for (const std::vector<int64_t>& counts : patterns) {
      ++salt;
      at::Tensor input = rankInput(comm.rank(), counts[comm.rank()], dtype, salt);
      int64_t total = 0;
      for (int64_t count : counts) total += count;
      at::Tensor output = at::full({total}, 99, input.options());
      std::string context = describe(comm, "allgatherv of " + std::string(c10::toString(dtype)));
      waitFor(comm.allgatherv(input, output, counts), context);
      std::vector<at::Tensor> parts;
      for (int r = 0; r < n; ++r) parts.push_back(rankInput(r, counts[r], dtype, salt));
      expectSameValues(output, at::cat(parts), context);
    }
  }
}

// Rank s sends (s + 2d) % 3 elements to rank d: unequal, sometimes empty blocks.
inline int64_t allToAllCount(int source, int destination) { return (source + 2 * destination) % 3; }

inline void allToAllRoutesUnequalBlocks(Communicator& comm) {
  const int n = comm.worldSize();
  const int me = comm.rank();
  int salt = 400;
  for (at::ScalarType dtype : allDtypes()) {
    ++salt;
    std::vector<int64_t> sendCounts, recvCounts;
    int64_t sendTotal = 0, recvTotal = 0;
    for (int peer = 0; peer < n; ++peer) {
      sendCounts.push_back(allToAllCount(me, peer));
      recvCounts.push_back(allToAllCount(peer, me));
      sendTotal += sendCounts.back();
      recvTotal += recvCounts.back();
    }
    at::Tensor input = rankInput(me, sendTotal, dtype, salt);
    at::Tensor output = at::full({recvTotal}, 99, input.options());
    std::string context = describe(comm, "allToAll of " + std::string(c10::toString(dtype)));
    waitFor(comm.allToAll(input, output, sendCounts, recvCounts), context);
    std::vector<at::Tensor> parts;
    for (int source = 0; source < n; ++source) {
      int64_t sourceTotal = 0, offset = 0;
      for (int d = 0; d < n; ++d) {
        if (d == me) offset = sourceTotal;
        sourceTotal += allToAllCount(source, d);
      }
      parts.push_back(
          rankInput(source, sourceTotal, dtype, salt).narrow(0, offset, allToAllCount(source, me)));
    }
    expectSameValues(output, at::cat(parts), context);
  }
}

inline void reduceScatterHandlesUnequalAndEmptyBlocks(Communicator& comm) {
  const int n = comm.worldSize();
  const int me = comm.rank();
  std::vector<int64_t> unequal, balanced;
  const int64_t balancedTotal = 2 * n + 1;  // never divisible by n > 1
  for (int r = 0; r < n; ++r) {
    unequal.push_back(r % 3);  // 0, 1, 2, 0, ... : empty blocks included
    balanced.push_back(balancedTotal / n + (r < balancedTotal % n ? 1 : 0));
  }
  int salt = 500;
  for (at::ScalarType dtype : allDtypes()) {
    for (ReduceOp op : opsFor(dtype)) {
      for (const std::vector<int64_t>& counts : {unequal, balanced}) {
        ++salt;
        int64_t total = 0, offset = 0;
        for (int r = 0; r < n; ++r) {
          if (r == me) offset = total;
          total += counts[r];
        }
        at::Tensor input = rankInput(me, total, dtype, salt);
        at::Tensor output = at::full({counts[me]}, 99, input.options());
        std::string context = describe(
            comm, "reduceScatter(" + toString(op) + ") of " + std::string(c10::toString(dtype)));
        waitFor(comm.reduceScatter(input, output, counts, {.op = op}), context);
        std::vector<at::Tensor> blocks;
        for (int r = 0; r < n; ++r) {
          blocks.push_back(rankInput(r, total, dtype, salt).narrow(0, offset, counts[me]));
        }
        expectSameValues(output, referenceReduce(blocks, op, dtype), context);
      }
    }
  }
}

inline void reduceScatterIntoASliceOfItsInput(Communicator& comm) {
  const int n = comm.worldSize();
  const int me = comm.rank();
  std::vector<int64_t> counts(n, 3);
  at::Tensor input = rankInput(me, 3 * n, at::kFloat, 600);
  at::Tensor output = input.narrow(0, 3 * me, 3);  // aliases the rank's own block
  std::string context = describe(comm, "in-place reduceScatter");
  waitFor(comm.reduceScatter(input, output, counts, {.op = ReduceOp::kAverage}), context);
  std::vector<at::Tensor> blocks;
  for (int r = 0; r < n; ++r)
    blocks.push_back(rankInput(r, 3 * n, at::kFloat, 600).narrow(0, 3 * me, 3));
  expectSameValues(output, referenceReduce(blocks, ReduceOp::kAverage, at::kFloat), context);
}

inline void broadcastCopiesTheRootFromEveryRoot(Communicator& comm) {
  const int n = comm.worldSize();
  int salt = 700;
  for (at::ScalarType dtype : allDtypes()) {
    for (int root = 0; root < n; ++root) {
      for (int64_t numel : {0, 7}) {
        ++salt;
        at::Tensor tensor = rankInput(comm.rank(), numel, dtype, salt);
        std::string context = describe(comm, "broadcast from " + std::to_string(root) + " of " +
                                                 std::string(c10::toString(dtype)));
        waitFor(comm.broadcast(tensor, {.root = root}), context);
        expectSameValues(tensor, rankInput(root, numel, dtype, salt), context);
      }
    }
  }
}

inline void zeroLengthTensorsCompleteInEveryCollective(Communicator& comm) {
  const int n = comm.worldSize();
  std::vector<int64_t> zeros(n, 0);
  at::Tensor empty = at::empty({0}, at::kFloat);
  at::Tensor output = at::empty({0}, at::kFloat);
  at::Tensor shaped = at::empty({4, 0}, at::kHalf);
  std::string context = describe(comm, "zero-length");
  EXPECT_TRUE(waitFor(comm.allreduce(empty, {}), context + " allreduce"));
  EXPECT_TRUE(waitFor(comm.allreduce(shaped, {.op = ReduceOp::kAverage}), context + " allreduce"));
  EXPECT_TRUE(waitFor(comm.allgather(empty, output), context + " allgather"));
  EXPECT_TRUE(waitFor(comm.allgatherv(empty, output, zeros), context + " allgatherv"));
  EXPECT_TRUE(waitFor(comm.allToAll(empty, output, zeros, zeros), context + " allToAll"));
  EXPECT_TRUE(waitFor(comm.reduceScatter(empty, output, zeros, {}), context + " reduceScatter"));
  EXPECT_TRUE(waitFor(comm.broadcast(empty, {}), context + " broadcast"));
  EXPECT_EQ(output.numel(), 0);
}

// Runs `call` and expects InvalidArgument whose message names `op`.
inline void expectInvalid(const std::function<void()>& call,
                          const std::string& op,
                          const std::string& context) {
  try {
    call();
    ADD_FAILURE() << context << ": expected InvalidArgument from " << op << ", nothing thrown";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(op), std::string::npos)
        << context << ": message does not name " << op << ": " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << context << ": expected InvalidArgument from " << op << ", got " << e.what();
  }
}

inline void invalidArgumentsThrowAtTheCall(Communicator& comm) {
  const int n = comm.worldSize();
  const int me = comm.rank();
  std::string context = describe(comm, "invalid arguments");
  at::Tensor good = at::ones({4}, at::kFloat);
  at::Tensor doubles = at::ones({4}, at::kDouble);
  at::Tensor strided = at::ones({4, 4}, at::kFloat).t();
  at::Tensor meta = at::empty({4}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  at::Tensor undefined;
  at::Tensor ints = at::ones({4}, at::kInt);
  at::Tensor bytes = at::ones({4}, at::kByte);
  at::Tensor gathered = at::zeros({4 * n}, at::kFloat);
  at::Tensor tooSmall = at::zeros({4 * n - 1}, at::kFloat);
  at::Tensor halfOutput = at::zeros({4 * n}, at::kHalf);
  std::vector<int64_t> fours(n, 4);

  expectInvalid([&] { (void)comm.allreduce(doubles, {}); }, "allreduce", context);
  expectInvalid([&] { (void)comm.allreduce(strided, {}); }, "allreduce", context);
  expectInvalid([&] { (void)comm.allreduce(meta, {}); }, "allreduce", context);
  expectInvalid([&] { (void)comm.allreduce(undefined, {}); }, "allreduce", context);
  expectInvalid([&] { (void)comm.allreduce(ints, {.op = ReduceOp::kAverage}); }, "allreduce",
                context);
  expectInvalid([&] { (void)comm.allgather(good, tooSmall); }, "allgather", context);
  expectInvalid([&] { (void)comm.allgather(good, halfOutput); }, "allgather", context);
  expectInvalid(
      [&] {
        at::Tensor input = gathered.narrow(0, 0, 4);
        (void)comm.allgather(input, gathered);
      },
      "allgather", context);
  expectInvalid([&] { (void)comm.allgatherv(good, gathered, std::vector<int64_t>(n + 1, 4)); },
                "allgatherv", context);
  expectInvalid(
      [&] {
        std::vector<int64_t> counts = fours;
        counts[me] = 3;
        (void)comm.allgatherv(good, gathered, counts);
      },
      "allgatherv", context);
  expectInvalid(
      [&] {
        std::vector<int64_t> counts = fours;
        counts[(me + 1) % n] = -1;
        (void)comm.allgatherv(good, gathered, counts);
      },
      "allgatherv", context);
  expectInvalid([&] { (void)comm.allToAll(good, tooSmall, fours, fours); }, "allToAll", context);
  expectInvalid([&] { (void)comm.reduceScatter(gathered, tooSmall, fours, {}); }, "reduceScatter",
                context);
  expectInvalid(
      [&] {
        at::Tensor byteInput = at::ones({4 * n}, at::kByte);
        (void)comm.reduceScatter(byteInput, bytes, fours, {.op = ReduceOp::kAverage});
      },
      "reduceScatter", context);
  expectInvalid([&] { (void)comm.broadcast(good, {.root = n}); }, "broadcast", context);
  expectInvalid([&] { (void)comm.broadcast(good, {.root = -1}); }, "broadcast", context);

  // Nothing was sent: the communicator still works and every rank is still in step.
  waitFor(comm.allreduce(good, {}), context);
  expectSameValues(good, at::full({4}, static_cast<float>(n), at::kFloat), context);
}

inline void operationsCompleteInIssueOrder(Communicator& comm) {
  const int n = comm.worldSize();
  std::string context = describe(comm, "issue order");
  at::Tensor first = rankInput(comm.rank(), 100000, at::kFloat, 800);
  at::Tensor second = rankInput(comm.rank(), 10, at::kInt, 801);
  at::Tensor third = rankInput(comm.rank(), 3, at::kLong, 802);
  at::Tensor gathered = at::zeros({3 * n}, at::kLong);
  std::unique_ptr<Work> a = comm.allreduce(first, {});
  std::unique_ptr<Work> b = comm.broadcast(second, {.root = n - 1});
  std::unique_ptr<Work> c = comm.allgather(third, gathered);
  std::unique_ptr<Work> d = comm.barrier();
  bool waited = waitFor(std::move(d), context + " barrier");
  EXPECT_TRUE(waited);
  EXPECT_TRUE(a->isCompleted()) << context;
  EXPECT_TRUE(b->isCompleted()) << context;
  EXPECT_TRUE(c->isCompleted()) << context;
  waitFor(std::move(c), context);
  waitFor(std::move(b), context);
  waitFor(std::move(a), context);
  std::vector<at::Tensor> inputs, parts;
  for (int r = 0; r < n; ++r) {
    inputs.push_back(rankInput(r, 100000, at::kFloat, 800));
    parts.push_back(rankInput(r, 3, at::kLong, 802));
  }
  expectSameValues(first, referenceReduce(inputs, ReduceOp::kSum, at::kFloat), context);
  expectSameValues(second, rankInput(n - 1, 10, at::kInt, 801), context);
  expectSameValues(gathered, at::cat(parts), context);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(waitFor(comm.barrier(), context + " barrier"));
}

struct ConformanceCase {
  std::string name;
  std::function<void(Communicator&)> run;
};

// Lets gtest print a case by name in test parameters.
inline void PrintTo(const ConformanceCase& conformanceCase, std::ostream* out) {
  *out << conformanceCase.name;
}

inline std::vector<ConformanceCase> conformanceCases() {
  return {
      {"AllreduceMatchesReferenceForEveryDtypeAndOp", allreduceMatchesReferenceForEveryDtypeAndOp},
      {"AllreduceOfLargeTensorsMatchesReference", allreduceOfLargeTensorsMatchesReference},
      {"AllgatherConcatenatesInRankOrder", allgatherConcatenatesInRankOrder},
      {"AllgathervHandlesUnequalAndEmptyBlocks", allgathervHandlesUnequalAndEmptyBlocks},
      {"AllToAllRoutesUnequalBlocks", allToAllRoutesUnequalBlocks},
      {"ReduceScatterHandlesUnequalAndEmptyBlocks", reduceScatterHandlesUnequalAndEmptyBlocks},
      {"ReduceScatterIntoASliceOfItsInput", reduceScatterIntoASliceOfItsInput},
      {"BroadcastCopiesTheRootFromEveryRoot", broadcastCopiesTheRootFromEveryRoot},
      {"ZeroLengthTensorsCompleteInEveryCollective", zeroLengthTensorsCompleteInEveryCollective},
      {"InvalidArgumentsThrowAtTheCall", invalidArgumentsThrowAtTheCall},
      {"OperationsCompleteInIssueOrder", operationsCompleteInIssueOrder},
  };
}

}  // namespace thinwire::comm::testing
