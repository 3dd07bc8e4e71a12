// File: tests/core/multirank/run_ranks.h
//
// Shared by the trainer tests: a small synthetic-data config that trains in well under a second
// per step, and runRanks(), which trains it on threads-as-ranks over the local backend.
//
// Example:
//   Config c = smallConfig(dir, "run");
//   TrainResult r = runRanks(c, 4);     // fails the test if the ranks' losses differ
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/logging.h"
#include "comm/local/local_communicator.h"
#include "core/config.h"
#include "core/trainer.h"

namespace thinwire::core {

inline Config smallConfig(const std::string& outputDir, const std::string& name) {
  Config c;
  c.run.name = name;
  c.run.outputDir = outputDir;
  c.run.seed = 7;
  c.run.logEvery = 1;
  c.run.progress = false;
  c.data.dataset = "synthetic";
  c.data.synthetic = {.trainSamples = 4096, .testSamples = 512, .features = 32, .classes = 4};
  c.model.type = "mlp";
  c.model.hidden = {64, 32};
  c.train.steps = 50;
  c.train.batchPerRank = 64;
  c.train.evalBatch = 256;
  c.train.resume = "never";
  c.optim.name = "sgd";
  c.optim.lr = 0.05;
  c.optim.momentum = 0.9;
  c.optim.nesterov = true;
  c.optim.schedule.name = "cosine";
  c.optim.schedule.warmupSteps = 5;
  c.comm.backend = "local";
  c.comm.bucketMb = 0.004;  // several buckets, so ordering and overlap are exercised
  return c;
}

// Runs `config` on `ranks` threads; returns rank 0's result (every rank's must agree).
// `optionsFor(rank)`, when given, supplies each rank's TrainerOptions.
inline TrainResult runRanks(const Config& config,
                            int ranks,
                            const std::function<TrainerOptions(int rank)>& optionsFor = {}) {
  auto world = comm::makeLocalWorld(ranks);
  std::vector<TrainResult> results(ranks);
  std::vector<std::exception_ptr> errors(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        Logger log({.rank = r, .level = LogLevel::kWarn});
        Trainer trainer(config, *world[r], log, optionsFor ? optionsFor(r) : TrainerOptions{});
        results[r] = trainer.run();
      } catch (...) {
        errors[r] = std::current_exception();
        world[r]->abort("test rank failed");
      }
    });
  }
  for (auto& t : threads) t.join();
  // Rethrow the root cause: the first error that is not another rank's abort notice.
  std::exception_ptr first;
  for (auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      if (std::string(ex.what()).find("aborted") == std::string::npos) std::rethrow_exception(e);
      if (!first) first = e;
    }
  }
  if (first) std::rethrow_exception(first);
  for (int r = 1; r < ranks; ++r) {
    EXPECT_EQ(results[r].steps.size(), results[0].steps.size());
    for (size_t i = 0; i < results[0].steps.size() && i < results[r].steps.size(); ++i) {
      EXPECT_EQ(results[r].steps[i].loss, results[0].steps[i].loss) << "rank " << r;
    }
    EXPECT_EQ(results[r].lastStep, results[0].lastStep) << "rank " << r;
    EXPECT_EQ(results[r].stoppedOnRequest, results[0].stoppedOnRequest) << "rank " << r;
  }
  return results[0];
}

}  // namespace thinwire::core
