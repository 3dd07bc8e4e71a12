#include "bench/comm_bench.h"

#include <ATen/ATen.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>

#include "base/error.h"
#include "bench/bench_common.h"
#include "comm/mpi/mpi_check.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"

namespace thinwire::bench {
namespace {

constexpr Collective kAllCollectives[] = {Collective::kAllreduce, Collective::kAllgather,
                                          Collective::kReduceScatter, Collective::kBroadcast};

bool isReduction(Collective collective) {
  return collective == Collective::kAllreduce || collective == Collective::kReduceScatter;
}

struct Result {
  double seconds = 0;
  double algbw = 0;  // GB/s
  double busbw = 0;  // GB/s
};

Result summarize(Collective collective,
                 int64_t bytes,
                 const std::vector<double>& times,
                 int worldSize) {
  Result result;
  result.seconds = median(times);
  result.algbw = static_cast<double>(bytes) / result.seconds / 1e9;
  result.busbw = result.algbw * busBandwidthFactor(collective, worldSize);
  return result;
}

// effective_busbw (computed on the uncompressed size) and wire_busbw (on the bytes actually sent)
// are both busbw here: these collectives send float32 uncompressed. Compressed variants report
// the two separately (see specs/benchmarking.md, "What to report").
void writeJson(std::ostream& out,
               Collective collective,
               const char* impl,
               int64_t bytes,
               int worldSize,
               int iterations,
               const Result& result) {
  out << "{\"bench\":\"comm_" << toString(collective) << "\",\"collective\":\""
      << toString(collective) << "\",\"impl\":\"" << impl << "\",";
  if (isReduction(collective)) out << "\"op\":\"sum\",";
  out << "\"dtype\":\"float32\",\"ranks\":" << worldSize << ",\"size_bytes\":" << bytes
      << ",\"iterations\":" << iterations << ",\"time_s\":" << std::setprecision(9)
      << result.seconds << ",\"algbw_gbps\":" << result.algbw << ",\"busbw_gbps\":" << result.busbw
      << ",\"effective_busbw_gbps\":" << result.busbw << ",\"wire_busbw_gbps\":" << result.busbw
      << "}\n";
}

// One collective at one size: `reset` restores the inputs and clears the outputs (untimed),
// `thinwire` and `mpi` are the two timed calls, `check` says whether the thinwire call that just
// ran produced the right result.
struct CollectiveCase {
  int64_t bytes = 0;  // S as reported (after rounding to whole blocks)
  std::function<void()> reset;
  std::function<void()> thinwire;
  std::function<void()> mpi;
  std::function<bool()> check;
};

// Builds the case for `collective` over `requestedBytes`; the tensors live in the lambdas.
CollectiveCase makeCase(Collective collective,
                        int64_t requestedBytes,
                        comm::MpiCommunicator& communicator) {
  const int rank = communicator.rank();
  const int worldSize = communicator.worldSize();
  const float expectedSum = static_cast<float>(worldSize);
  CollectiveCase result;
  switch (collective) {
    case Collective::kAllreduce:
    case Collective::kBroadcast: {
      const int64_t numel = requestedBytes / 4;
      TW_CHECK(numel <= INT_MAX, "comm bench: size ", requestedBytes,
               " bytes exceeds MPI's int count");
      result.bytes = numel * 4;
      at::Tensor buffer = at::empty({numel}, at::kFloat);
      float* data = buffer.data_ptr<float>();
      const int count = static_cast<int>(numel);
      if (collective == Collective::kAllreduce) {
        // Ones on every rank: both implementations see identical data and the sum is checkable.
        result.reset = [buffer]() mutable { buffer.fill_(1.0f); };
        result.thinwire = [buffer, &communicator]() mutable {
          communicator.allreduce(buffer, {})->wait(comm::kDefaultTimeout);
        };
        result.mpi = [data, count]() {
          TW_MPI_CHECK(
              MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
        };
        result.check = [data, numel, expectedSum]() {
          return data[0] == expectedSum && data[numel - 1] == expectedSum;
        };
      } else {
        // Root 0 holds ones, the others zeros: a rank that received nothing is visible.
        result.reset = [buffer, rank]() mutable { buffer.fill_(rank == 0 ? 1.0f : 0.0f); };
        result.thinwire = [buffer, &communicator]() mutable {
          communicator.broadcast(buffer, {})->wait(comm::kDefaultTimeout);
        };
        result.mpi = [data, count]() {
          TW_MPI_CHECK(MPI_Bcast(data, count, MPI_FLOAT, 0, MPI_COMM_WORLD));
        };
        result.check = [data, numel]() { return data[0] == 1.0f && data[numel - 1] == 1.0f; };
      }
      break;
    }
    case Collective::kAllgather:
    case Collective::kReduceScatter: {
      const int64_t block = requestedBytes / 4 / worldSize;
      TW_CHECK(block >= 1, "comm bench: ", toString(collective), " of ", requestedBytes,
               " bytes over ", worldSize, " ranks leaves less than one float32 per rank");
      TW_CHECK(block * worldSize <= INT_MAX, "comm bench: size ", requestedBytes,
               " bytes exceeds MPI's int count");
      result.bytes = block * worldSize * 4;
      const int count = static_cast<int>(block);
      if (collective == Collective::kAllgather) {
        // Rank r sends r + 1, so every block of the output names its source.
        at::Tensor input = at::full({block}, static_cast<float>(rank + 1), at::kFloat);
        at::Tensor output = at::empty({block * worldSize}, at::kFloat);
        const float* in = input.data_ptr<float>();
        float* out = output.data_ptr<float>();
        result.reset = [output]() mutable { output.zero_(); };
        result.thinwire = [input, output, &communicator]() mutable {
          communicator.allgather(input, output)->wait(comm::kDefaultTimeout);
        };
        result.mpi = [in, out, count]() {
          TW_MPI_CHECK(MPI_Allgather(in, count, MPI_FLOAT, out, count, MPI_FLOAT, MPI_COMM_WORLD));
        };
        result.check = [out, block, worldSize]() {
          for (int r = 0; r < worldSize; ++r) {
            const float expected = static_cast<float>(r + 1);
            if (out[r * block] != expected || out[(r + 1) * block - 1] != expected) return false;
          }
          return true;
        };
      } else {
        at::Tensor input = at::ones({block * worldSize}, at::kFloat);
        at::Tensor output = at::empty({block}, at::kFloat);
        const float* in = input.data_ptr<float>();
        float* out = output.data_ptr<float>();
        const std::vector<int64_t> counts(worldSize, block);
        // MPI_Reduce_scatter with the same counts is the call thinwire issues, so the ratio is
        // the communicator's overhead alone. (MPI_Reduce_scatter_block picks another algorithm
        // in Open MPI 4.1, measured 2x slower at 16 MB on 4 ranks sharing 2 cores.)
        const std::vector<int> mpiCounts(worldSize, count);
        result.reset = [output]() mutable { output.zero_(); };
        result.thinwire = [input, output, counts, &communicator]() mutable {
          communicator.reduceScatter(input, output, counts, {})->wait(comm::kDefaultTimeout);
        };
        result.mpi = [in, out, mpiCounts]() {
          TW_MPI_CHECK(
              MPI_Reduce_scatter(in, out, mpiCounts.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
        };
        result.check = [out, block, expectedSum]() {
          return out[0] == expectedSum && out[block - 1] == expectedSum;
        };
      }
      break;
    }
  }
  return result;
}

void printHeader(
    std::ostream& out, Collective collective, int worldSize, int iterations, int warmup) {
  out << "# " << toString(collective) << (isReduction(collective) ? " sum" : "") << " float32, "
      << worldSize << " ranks, median of " << iterations << " (after " << warmup
      << " warm-up), times are the slowest rank's\n";
}

}  // namespace

std::string toString(Collective collective) {
  switch (collective) {
    case Collective::kAllreduce:
      return "allreduce";
    case Collective::kAllgather:
      return "allgather";
    case Collective::kReduceScatter:
      return "reduce_scatter";
    case Collective::kBroadcast:
      return "broadcast";
  }
  TW_THROW(Error, "internal error: unhandled Collective ", static_cast<int>(collective));
}

Collective parseCollective(const std::string& name) {
  for (Collective collective : kAllCollectives) {
    if (toString(collective) == name) return collective;
  }
  TW_THROW(InvalidArgument, "--collectives: unknown collective '", name,
           "', expected allreduce, allgather, reduce_scatter or broadcast");
}

double busBandwidthFactor(Collective collective, int worldSize) {
  TW_CHECK(worldSize >= 1, "busBandwidthFactor: worldSize = ", worldSize, ", expected >= 1");
  const double n = worldSize;
  switch (collective) {
    case Collective::kAllreduce:
      return 2.0 * (n - 1) / n;
    case Collective::kAllgather:
    case Collective::kReduceScatter:
      return (n - 1) / n;
    case Collective::kBroadcast:
      return 1.0;
  }
  TW_THROW(Error, "internal error: unhandled Collective ", static_cast<int>(collective));
}

CommBenchOptions parseCommBenchArgs(const std::vector<std::string>& args) {
  CommBenchOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    size_t equals = flag.find('=');
    if (equals != std::string::npos) {
      value = flag.substr(equals + 1);
      flag = flag.substr(0, equals);
    } else if (flag == "--sizes" || flag == "--iterations" || flag == "--warmup" ||
               flag == "--json" || flag == "--collectives" || flag == "--allreduce") {
      TW_CHECK(i + 1 < args.size(), flag, " needs a value\n", kCommBenchUsage);
      value = args[++i];
    }
    if (flag == "--sizes") {
      options.sizesBytes = parseSizeList(flag, value);
    } else if (flag == "--collectives") {
      options.collectives.clear();
      for (const std::string& item : splitNames(flag, value)) {
        Collective collective = parseCollective(item);
        TW_CHECK(std::find(options.collectives.begin(), options.collectives.end(), collective) ==
                     options.collectives.end(),
                 "--collectives: '", item, "' is listed twice");
        options.collectives.push_back(collective);
      }
    } else if (flag == "--iterations") {
      options.iterations = parseCount(flag, value, 1, 1000000);
    } else if (flag == "--warmup") {
      options.warmup = parseCount(flag, value, 0, 1000000);
    } else if (flag == "--allreduce") {
      TW_CHECK(value == "ring" || value == "mpi", "--allreduce must be ring or mpi, got '", value,
               "'");
      options.ring = value == "ring";
    } else if (flag == "--json") {
      TW_CHECK(!value.empty(), "--json needs a path");
      options.jsonPath = value;
    } else {
      TW_THROW(InvalidArgument, "unknown argument '", args[i], "'\n", kCommBenchUsage);
    }
  }
  return options;
}

int runCommBench(const CommBenchOptions& options) {
  TW_CHECK(options.iterations >= 1, "comm bench: iterations = ", options.iterations,
           ", expected >= 1");
  TW_CHECK(options.warmup >= 0, "comm bench: warmup = ", options.warmup, ", expected >= 0");
  TW_CHECK(!options.collectives.empty(), "comm bench: no collective to run");
  for (int64_t bytes : options.sizesBytes) {
    TW_CHECK(bytes >= 4 && bytes % 4 == 0, "comm bench: size ", bytes,
             " bytes is not a positive multiple of 4 (float32 elements)");
  }
  auto environment = std::make_shared<comm::MpiEnvironment>();
  comm::MpiCommunicatorOptions commOptions;
  if (!options.ring) commOptions.ringMinBytes = 0;
  comm::MpiCommunicator communicator(environment, commOptions);
  const int rank = communicator.rank();
  const int worldSize = communicator.worldSize();
  std::ostream& out = options.out != nullptr ? *options.out : std::cout;
  std::ofstream json;
  if (rank == 0 && !options.jsonPath.empty()) {
    json.open(options.jsonPath, std::ios::out | std::ios::trunc);
    TW_CHECK(json.good(), "comm bench: cannot open --json path '", options.jsonPath, "'");
  }

  bool correct = true;
  bool firstTable = true;
  for (Collective collective : options.collectives) {
    if (rank == 0) {
      if (!firstTable) out << "\n";
      printHeader(out, collective, worldSize, options.iterations, options.warmup);
      if (firstTable) out << "# " << comm::MpiEnvironment::libraryVersion() << "\n";
      if (collective == Collective::kAllreduce) {
        out << "# thinwire allreduce: "
            << (options.ring ? "ring for sums >= 64 KiB (--allreduce ring)"
                             : "MPI_Allreduce (--allreduce mpi)")
            << "\n";
      }
      out << std::setw(10) << "size"
          << " | " << std::setw(11) << "thinwire s" << std::setw(9) << "algbw" << std::setw(9)
          << "busbw"
          << " | " << std::setw(11) << "MPI s" << std::setw(9) << "algbw" << std::setw(9) << "busbw"
          << " | " << std::setw(7) << "ratio"
          << "\n";
    }
    firstTable = false;
    for (int64_t requestedBytes : options.sizesBytes) {
      CollectiveCase run = makeCase(collective, requestedBytes, communicator);
      // Each timed call starts from the same inputs on every rank after a barrier.
      auto timeThinwire = [&]() {
        run.reset();
        TW_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        double start = MPI_Wtime();
        run.thinwire();
        double seconds = MPI_Wtime() - start;
        if (!run.check()) correct = false;
        return seconds;
      };
      auto timeMpi = [&]() {
        run.reset();
        TW_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        double start = MPI_Wtime();
        run.mpi();
        return MPI_Wtime() - start;
      };

      for (int i = 0; i < options.warmup; ++i) {
        timeThinwire();
        timeMpi();
      }
      std::vector<double> thinwireTimes, mpiTimes;
      for (int i = 0; i < options.iterations; ++i) {
        double times[2];
        if (i % 2 == 0) {
          times[0] = timeThinwire();
          times[1] = timeMpi();
        } else {
          times[1] = timeMpi();
          times[0] = timeThinwire();
        }
        TW_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, times, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        thinwireTimes.push_back(times[0]);
        mpiTimes.push_back(times[1]);
      }

      if (rank == 0) {
        const int64_t bytes = run.bytes;
        Result ours = summarize(collective, bytes, thinwireTimes, worldSize);
        Result mpi = summarize(collective, bytes, mpiTimes, worldSize);
        // busbw ratio = time ratio for equal sizes; the time form also works for one rank.
        double ratio = mpi.seconds / ours.seconds;
        out << std::setw(10) << formatBytes(bytes) << " | " << std::scientific
            << std::setprecision(3) << std::setw(11) << ours.seconds << std::fixed
            << std::setprecision(2) << std::setw(9) << ours.algbw << std::setw(9) << ours.busbw
            << " | " << std::scientific << std::setprecision(3) << std::setw(11) << mpi.seconds
            << std::fixed << std::setprecision(2) << std::setw(9) << mpi.algbw << std::setw(9)
            << mpi.busbw << " | " << std::setprecision(3) << std::setw(7) << ratio << "\n";
        out.flush();
        if (json.is_open()) {
          writeJson(json, collective, "thinwire", bytes, worldSize, options.iterations, ours);
          writeJson(json, collective, "mpi", bytes, worldSize, options.iterations, mpi);
        }
      }
    }
  }

  int localCorrect = correct ? 1 : 0;
  int allCorrect = 0;
  TW_MPI_CHECK(MPI_Allreduce(&localCorrect, &allCorrect, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  if (rank == 0) {
    out << "# algbw, busbw in GB/s; ratio = thinwire busbw / MPI busbw\n";
    const bool onlyAllreduce =
        options.collectives.size() == 1 && options.collectives[0] == Collective::kAllreduce;
    if (!onlyAllreduce) {
      out << "# busbw = algbw * 2(n-1)/n (allreduce), (n-1)/n (allgather, reduce_scatter), "
             "1 (broadcast); S = allgather output, reduce_scatter input\n";
    }
    if (!allCorrect) out << "# ERROR: a thinwire collective returned a wrong result\n";
  }
  return allCorrect ? 0 : 1;
}

}  // namespace thinwire::bench
