#include "comm/op_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

#include "base/error.h"

namespace thinwire::comm {
namespace {

using namespace std::chrono_literals;

TEST(OpQueueTest, RunsTasksInSubmissionOrder) {
  std::vector<int> order;
  std::vector<std::unique_ptr<Work>> works;
  {
    OpQueue queue;
    for (int i = 0; i < 100; ++i) {
      works.push_back(
          queue.submit("task " + std::to_string(i), [&order, i] { order.push_back(i); }));
    }
    works.back()->wait(10s);
    for (const auto& work : works) EXPECT_TRUE(work->isCompleted());
  }
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(OpQueueTest, StoresTheTaskErrorAndRethrowsItFromWait) {
  OpQueue queue;
  std::unique_ptr<Work> invalid =
      queue.submit("bad", [] { TW_THROW(InvalidArgument, "bad value 7"); });
  std::unique_ptr<Work> foreign = queue.submit("foreign", [] { throw std::runtime_error("boom"); });
  std::unique_ptr<Work> fine = queue.submit("fine", [] {});
  EXPECT_THROW(invalid->wait(10s), InvalidArgument);
  EXPECT_THROW(invalid->wait(10s), InvalidArgument);  // rethrown on every wait
  try {
    foreign->wait(10s);
    ADD_FAILURE() << "no error stored";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("foreign"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(fine->wait(10s));  // a failed task does not stop the queue
}

TEST(OpQueueTest, WaitTimesOutWhileATaskIsBlocked) {
  OpQueue queue;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::unique_ptr<Work> work = queue.submit("blocked op", [released] { released.wait(); });
  try {
    work->wait(20ms);
    ADD_FAILURE() << "blocked task reported completion";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("blocked op"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(work->isCompleted());
  release.set_value();
  EXPECT_NO_THROW(work->wait(10s));
}

TEST(OpQueueTest, DestructionRunsQueuedTasksAndDroppedWorksAreSafe) {
  std::atomic<int> ran{0};
  {
    OpQueue queue;
    for (int i = 0; i < 10; ++i) {
      (void)queue.submit("dropped", [&ran] {
        std::this_thread::sleep_for(1ms);
        ++ran;
      });
    }
  }
  EXPECT_EQ(ran.load(), 10);
}

TEST(OpQueueTest, SubmitAfterStopThrowsCommError) {
  OpQueue queue(OpQueueOptions{.name = "test queue"});
  queue.stop();
  queue.stop();  // idempotent
  EXPECT_THROW((void)queue.submit("late", [] {}), CommError);
}

TEST(OpQueueTest, RunSyncRunsOnTheWorkerAndRethrows) {
  OpQueue queue;
  std::thread::id worker;
  queue.runSync("probe", [&worker] { worker = std::this_thread::get_id(); });
  EXPECT_NE(worker, std::this_thread::get_id());
  EXPECT_THROW(queue.runSync("fail", [] { TW_THROW(CommError, "nope"); }), CommError);
}

}  // namespace
}  // namespace thinwire::comm
