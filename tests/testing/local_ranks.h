// File: tests/testing/local_ranks.h
//
// Runs a test body on every rank of a local (threads-as-ranks) world.
//
// Example:
//   auto world = comm::makeLocalWorld(4);
//   runOnEveryRank(world, [](comm::Communicator& c) { EXPECT_EQ(c.worldSize(), 4); });
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"

namespace thinwire::testing {

// Runs `body` on one thread per rank of `world` and joins them. An exception on a rank is a test
// failure naming the rank, and aborts the world so the other ranks fail fast instead of waiting
// for their timeout.
inline void runOnEveryRank(std::vector<std::unique_ptr<comm::Communicator>>& world,
                           const std::function<void(comm::Communicator&)>& body) {
  std::vector<std::thread> threads;
  for (size_t rank = 0; rank < world.size(); ++rank) {
    threads.emplace_back([&world, &body, rank] {
      setErrorRank(static_cast<int>(rank));
      try {
        body(*world[rank]);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << rank << " threw: " << e.what();
        world[rank]->abort(e.what());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
}

}  // namespace thinwire::testing
