// File: tests/compressors/onebit_cases.h
//
// The OneBitAllreduce checks shared by the local (threads as ranks) and MPI tiers: every rank
// draws every rank's inputs from the same seeds, runs the single-process reference
// (tests/compressors/onebit_reference.h) for all of them and compares its own outputs and error
// buffers with it bit for bit, over several calls (so the error feedback is exercised).
//
// Example:
//   runOneBitAllreduceCase(comm, {.masked = false});
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "compressors/onebit_allreduce.h"
#include "tests/compressors/onebit_reference.h"

namespace thinwire::testing {

struct OneBitCase {
  bool masked = false;  // mask out every third element of every tensor (and feed them garbage)
  int rounds = 3;       // calls, so that worker and server errors feed back
};

// Numels that hit every padding case for n ranks: 1, 7, 8n-1, 8n, 8n+1, and two larger ones.
inline std::vector<int64_t> oneBitNumels(int n) {
  return {1, 7, 8 * n - 1, 8 * n, 8 * n + 1, 300, 1001};
}

// Rank r's input of tensor t in round `round`: Gaussian, with exact zeros and negative zeros
// sprinkled in so that sign+(0) = sign+(-0) = +1 is exercised.
inline std::vector<float> oneBitInput(int round, int rank, size_t tensor, int64_t numel) {
  std::mt19937 generator(static_cast<uint32_t>(1000003 * round + 7919 * rank + 31 * tensor + 1));
  std::normal_distribution<float> normal(0.0f, 1.0f + static_cast<float>(tensor));
  std::vector<float> values(static_cast<size_t>(numel));
  for (int64_t k = 0; k < numel; ++k) {
    values[k] = normal(generator);
    if (k % 11 == 3) values[k] = 0.0f;
    if (k % 13 == 5) values[k] = -0.0f;
  }
  return values;
}

inline void expectBitEqual(const float* actual,
                           const std::vector<float>& expected,
                           const std::string& what) {
  int64_t mismatches = 0;
  for (size_t k = 0; k < expected.size(); ++k) {
    if (std::memcmp(&actual[k], &expected[k], sizeof(float)) != 0) {
      if (++mismatches <= 3) {
        ADD_FAILURE() << what << "[" << k << "] = " << actual[k] << ", reference " << expected[k];
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

inline void runOneBitAllreduceCase(comm::Communicator& comm, const OneBitCase& c) {
  const int n = comm.worldSize();
  const int rank = comm.rank();
  const std::vector<int64_t> numels = oneBitNumels(n);
  std::vector<OneBitReference> references;
  std::vector<std::vector<bool>> masks(numels.size());
  std::vector<at::Tensor> maskTensors;
  for (size_t t = 0; t < numels.size(); ++t) {
    references.emplace_back(n, numels[t]);
    if (c.masked) {
      at::Tensor mask = at::ones({numels[t]}, at::kBool);
      for (int64_t k = 0; k < numels[t]; ++k) {
        masks[t].push_back(k % 3 != 1);
        mask[k] = k % 3 != 1;
      }
      maskTensors.push_back(mask);
    }
  }
  compressors::OneBitAllreduce onebit;
  int64_t blockBytes = 4 * static_cast<int64_t>(numels.size());
  for (size_t t = 0; t < numels.size(); ++t) blockBytes += references[t].chunk() / 8;

  for (int round = 0; round < c.rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const StateDict before = onebit.state();
    std::vector<at::Tensor> tensors;
    std::vector<std::vector<float>> expected;
    for (size_t t = 0; t < numels.size(); ++t) {
      std::vector<std::vector<float>> inputs;
      for (int r = 0; r < n; ++r) inputs.push_back(oneBitInput(round, r, t, numels[t]));
      expected.push_back(references[t].step(inputs, masks[t]));
      tensors.push_back(at::from_blob(inputs[rank].data(), {numels[t]}, at::kFloat).clone());
    }
    onebit.run(tensors, comm, maskTensors);

    const StateDict after = onebit.state();
    for (size_t t = 0; t < numels.size(); ++t) {
      const std::string name =
          "tensor " + std::to_string(t) + " (numel " + std::to_string(numels[t]) + ")";
      ASSERT_EQ(tensors[t].numel(), numels[t]) << name;  // padding never leaks
      expectBitEqual(tensors[t].data_ptr<float>(), expected[t], name + " output");
      if (n == 1) continue;
      const at::Tensor& worker = after.at(std::to_string(t) + ".worker_error");
      const at::Tensor& server = after.at(std::to_string(t) + ".server_error");
      ASSERT_EQ(worker.numel(), references[t].padded()) << name;
      ASSERT_EQ(server.numel(), references[t].chunk()) << name;
      expectBitEqual(worker.data_ptr<float>(), references[t].workerError(rank),
                     name + " worker error");
      expectBitEqual(server.data_ptr<float>(), references[t].serverError(rank),
                     name + " server error");
      // Invariant worker_err_new + s_w * sign+(x) == x (to rounding), x = pad(m) + worker_err.
      const float scale = references[t].lastWorkerScale(rank);
      const std::vector<float> input = oneBitInput(round, rank, t, numels[t]);
      const float* previous =
          round == 0 ? nullptr : before.at(std::to_string(t) + ".worker_error").data_ptr<float>();
      for (int64_t k = 0; k < references[t].padded(); ++k) {
        if (c.masked && k < numels[t] && !masks[t][k]) {
          EXPECT_EQ(worker.data_ptr<float>()[k], 0.0f) << name << " masked worker error " << k;
          continue;
        }
        const float x = (k < numels[t] ? input[k] : 0.0f) + (previous ? previous[k] : 0.0f);
        const float rebuilt = worker.data_ptr<float>()[k] + scale * OneBitReference::signPlus(x);
        EXPECT_NEAR(rebuilt, x, 1e-6f * (std::fabs(x) + scale)) << name << " element " << k;
      }
      if (c.masked) {
        for (int64_t k = 0; k < references[t].chunk(); ++k) {
          const int64_t index = rank * references[t].chunk() + k;
          if (index < numels[t] && !masks[t][index]) {
            EXPECT_EQ(server.data_ptr<float>()[k], 0.0f) << name << " masked server error";
          }
        }
        for (int64_t k = 0; k < numels[t]; ++k) {
          if (!masks[t][k]) {
            EXPECT_EQ(tensors[t].data_ptr<float>()[k], 0.0f) << name;
          }
        }
      }
    }
    // Every rank holds the same bytes: gather everyone's outputs and compare with rank 0's.
    std::vector<at::Tensor> flat;
    for (auto& t : tensors) flat.push_back(t.reshape({-1}));
    at::Tensor mine = at::cat(flat);
    at::Tensor all = at::empty({mine.numel() * n}, at::kFloat);
    comm.allgather(mine, all)->wait(comm::kDefaultTimeout);
    for (int r = 1; r < n; ++r) {
      EXPECT_EQ(std::memcmp(all.data_ptr<float>(), all.data_ptr<float>() + r * mine.numel(),
                            static_cast<size_t>(mine.numel()) * sizeof(float)),
                0)
          << "rank " << r << " holds other outputs than rank 0";
    }
    EXPECT_EQ(onebit.bytesSent(), (round + 1) * 2 * (n - 1) * blockBytes);
  }
}

}  // namespace thinwire::testing
