#include "bench/comm_bench.h"

#include <ATen/ATen.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "base/error.h"
#include "comm/mpi/mpi_check.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"

namespace thinwire::bench {
namespace {

int64_t parseSize(const std::string& text) {
  TW_CHECK(!text.empty(), "--sizes: empty size, expected e.g. 4K or 64M");
  int64_t multiplier = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'K':
    case 'k':
      multiplier = int64_t{1} << 10;
      break;
    case 'M':
    case 'm':
      multiplier = int64_t{1} << 20;
      break;
    case 'G':
    case 'g':
      multiplier = int64_t{1} << 30;
      break;
    default:
      break;
  }
  if (multiplier != 1) digits.pop_back();
  size_t used = 0;
  int64_t value = -1;
  try {
    value = std::stoll(digits, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TW_CHECK(used == digits.size() && !digits.empty() && value > 0, "--sizes: '", text,
           "' is not a positive size, expected e.g. 4096, 4K or 64M");
  return value * multiplier;
}

int parseCount(const std::string& flag, const std::string& text, int minimum) {
  size_t used = 0;
  int value = minimum - 1;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TW_CHECK(used == text.size() && value >= minimum, flag, " '", text,
           "' is not an integer >= ", minimum);
  return value;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

std::string formatBytes(int64_t bytes) {
  std::ostringstream out;
  if (bytes >= (int64_t{1} << 20) && bytes % (int64_t{1} << 20) == 0) {
    out << (bytes >> 20) << " MB";
  } else if (bytes >= 1024 && bytes % 1024 == 0) {
    out << (bytes >> 10) << " KB";
  } else {
    out << bytes << " B";
  }
  return out.str();
}

struct Result {
  double seconds = 0;
  double algbw = 0;  // GB/s
  double busbw = 0;  // GB/s
};

Result summarize(int64_t bytes, const std::vector<double>& times, int worldSize) {
  Result result;
  result.seconds = median(times);
  result.algbw = static_cast<double>(bytes) / result.seconds / 1e9;
  result.busbw = result.algbw * 2.0 * (worldSize - 1) / worldSize;
  return result;
}

void writeJson(std::ostream& out,
               const char* impl,
               int64_t bytes,
               int worldSize,
               int iterations,
               const Result& result) {
  out << "{\"bench\":\"comm_allreduce\",\"impl\":\"" << impl << "\",\"op\":\"sum\","
      << "\"dtype\":\"float32\",\"ranks\":" << worldSize << ",\"size_bytes\":" << bytes
      << ",\"iterations\":" << iterations << ",\"time_s\":" << std::setprecision(9)
      << result.seconds << ",\"algbw_gbps\":" << result.algbw << ",\"busbw_gbps\":" << result.busbw
      << "}\n";
}

}  // namespace

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
               flag == "--json") {
      TW_CHECK(i + 1 < args.size(), flag, " needs a value\n", kCommBenchUsage);
      value = args[++i];
    }
    if (flag == "--sizes") {
      options.sizesBytes.clear();
      std::stringstream list(value);
      std::string item;
      while (std::getline(list, item, ',')) options.sizesBytes.push_back(parseSize(item));
      TW_CHECK(!options.sizesBytes.empty(), "--sizes: empty list");
    } else if (flag == "--iterations") {
      options.iterations = parseCount(flag, value, 1);
    } else if (flag == "--warmup") {
      options.warmup = parseCount(flag, value, 0);
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
  for (int64_t bytes : options.sizesBytes) {
    TW_CHECK(bytes >= 4 && bytes % 4 == 0, "comm bench: size ", bytes,
             " bytes is not a positive multiple of 4 (float32 elements)");
  }
  auto environment = std::make_shared<comm::MpiEnvironment>();
  comm::MpiCommunicator communicator(environment);
  const int rank = communicator.rank();
  const int worldSize = communicator.worldSize();
  std::ostream& out = options.out != nullptr ? *options.out : std::cout;
  std::ofstream json;
  if (rank == 0 && !options.jsonPath.empty()) {
    json.open(options.jsonPath, std::ios::out | std::ios::trunc);
    TW_CHECK(json.good(), "comm bench: cannot open --json path '", options.jsonPath, "'");
  }
  if (rank == 0) {
    out << "# allreduce sum float32, " << worldSize << " ranks, median of " << options.iterations
        << " (after " << options.warmup << " warm-up), times are the slowest rank's\n"
        << "# " << comm::MpiEnvironment::libraryVersion() << "\n"
        << std::setw(10) << "size"
        << " | " << std::setw(11) << "thinwire s" << std::setw(9) << "algbw" << std::setw(9)
        << "busbw"
        << " | " << std::setw(11) << "MPI s" << std::setw(9) << "algbw" << std::setw(9) << "busbw"
        << " | " << std::setw(7) << "ratio"
        << "\n";
  }

  bool correct = true;
  for (int64_t bytes : options.sizesBytes) {
    const int64_t numel = bytes / 4;
    TW_CHECK(numel <= INT_MAX, "comm bench: size ", bytes, " bytes exceeds MPI's int count");
    at::Tensor buffer = at::empty({numel}, at::kFloat);
    float* data = buffer.data_ptr<float>();

    // Each timed call starts from ones on every rank after a barrier, so the two
    // implementations see identical data and the result (worldSize everywhere) is checkable.
    auto runThinwire = [&]() {
      buffer.fill_(1.0f);
      TW_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      double start = MPI_Wtime();
      communicator.allreduce(buffer, {})->wait(comm::kDefaultTimeout);
      double seconds = MPI_Wtime() - start;
      if (data[0] != worldSize || data[numel - 1] != worldSize) correct = false;
      return seconds;
    };
    auto runMpi = [&]() {
      buffer.fill_(1.0f);
      TW_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      double start = MPI_Wtime();
      TW_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(numel), MPI_FLOAT, MPI_SUM,
                                 MPI_COMM_WORLD));
      return MPI_Wtime() - start;
    };

    for (int i = 0; i < options.warmup; ++i) {
      runThinwire();
      runMpi();
    }
    std::vector<double> thinwireTimes, mpiTimes;
    for (int i = 0; i < options.iterations; ++i) {
      double times[2];
      if (i % 2 == 0) {
        times[0] = runThinwire();
        times[1] = runMpi();
      } else {
        times[1] = runMpi();
        times[0] = runThinwire();
      }
      TW_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, times, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
      thinwireTimes.push_back(times[0]);
      mpiTimes.push_back(times[1]);
    }

    if (rank == 0) {
      Result ours = summarize(bytes, thinwireTimes, worldSize);
      Result mpi = summarize(bytes, mpiTimes, worldSize);
      // busbw ratio = time ratio for equal sizes; the time form also works for one rank.
      double ratio = mpi.seconds / ours.seconds;
      out << std::setw(10) << formatBytes(bytes) << " | " << std::scientific << std::setprecision(3)
          << std::setw(11) << ours.seconds << std::fixed << std::setprecision(2) << std::setw(9)
          << ours.algbw << std::setw(9) << ours.busbw << " | " << std::scientific
          << std::setprecision(3) << std::setw(11) << mpi.seconds << std::fixed
          << std::setprecision(2) << std::setw(9) << mpi.algbw << std::setw(9) << mpi.busbw << " | "
          << std::setprecision(3) << std::setw(7) << ratio << "\n";
      out.flush();
      if (json.is_open()) {
        writeJson(json, "thinwire", bytes, worldSize, options.iterations, ours);
        writeJson(json, "mpi", bytes, worldSize, options.iterations, mpi);
      }
    }
  }

  int localCorrect = correct ? 1 : 0;
  int allCorrect = 0;
  TW_MPI_CHECK(MPI_Allreduce(&localCorrect, &allCorrect, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  if (rank == 0) {
    out << "# algbw, busbw in GB/s; ratio = thinwire busbw / MPI busbw\n";
    if (!allCorrect) out << "# ERROR: a thinwire allreduce returned a wrong sum\n";
  }
  return allCorrect ? 0 : 1;
}

}  // namespace thinwire::bench
