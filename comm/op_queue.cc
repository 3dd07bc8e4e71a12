#include "comm/op_queue.h"

#include <chrono>
#include <exception>
#include <iostream>
#include <utility>

#include "base/error.h"

namespace thinwire::comm {
namespace {

// The caller's handle: shares the completion state with the queued task, so dropping it early
// never leaves the worker writing into freed memory.
class SharedWork : public Work {
 public:
  explicit SharedWork(std::shared_ptr<PendingWork> work) : work_(std::move(work)) {}
  bool isCompleted() override { return work_->isCompleted(); }
  void wait(std::chrono::milliseconds timeout) override { work_->wait(timeout); }

 private:
  std::shared_ptr<PendingWork> work_;
};

}  // namespace

OpQueue::OpQueue(OpQueueOptions options) : options_(std::move(options)) {
  worker_ = std::thread([this] { workerLoop(); });
}

OpQueue::~OpQueue() noexcept { stop(); }

std::unique_ptr<Work> OpQueue::submit(std::string description, std::function<void()> task) {
  auto work = std::make_shared<PendingWork>(std::move(description));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      TW_THROW(CommError, "cannot submit ", work->description(), ": op queue '", options_.name,
               "' is stopped (the communicator was aborted or destroyed)");
    }
    tasks_.push_back(Task{work, std::move(task)});
  }
  wakeUp_.notify_one();
  return std::make_unique<SharedWork>(std::move(work));
}

void OpQueue::runSync(std::string description, std::function<void()> task) {
  std::unique_ptr<Work> work = submit(std::move(description), std::move(task));
  // Setup and teardown steps are local or bounded by the MPI library itself; a generous bound
  // still keeps a wedged worker from hanging the caller forever.
  work->wait(std::chrono::hours(1));
}

void OpQueue::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wakeUp_.notify_one();
  if (worker_.joinable()) {
    if (worker_.get_id() == std::this_thread::get_id()) {
      std::cerr << "thinwire: op queue '" << options_.name
                << "' stopped from its own worker thread; this would deadlock\n";
      std::terminate();
    }
    worker_.join();
  }
}

void OpQueue::workerLoop() {
  setErrorRank(options_.errorRank);
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wakeUp_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    try {
      task.run();
      task.work->finish();
    } catch (const Error&) {
      task.work->fail(std::current_exception());
    } catch (const std::exception& e) {
      try {
        TW_THROW(CommError, task.work->description(), " failed: ", e.what());
      } catch (...) {
        task.work->fail(std::current_exception());
      }
    } catch (...) {
      try {
        TW_THROW(CommError, task.work->description(), " failed with a non-standard exception");
      } catch (...) {
        task.work->fail(std::current_exception());
      }
    }
  }
}

}  // namespace thinwire::comm
