#include "comm/work.h"

#include "base/error.h"

namespace thinwire::comm {

PendingWork::PendingWork(std::string description) : description_(std::move(description)) {}

bool PendingWork::isCompleted() {
  std::lock_guard<std::mutex> lock(mutex_);
  return completed_;
}

void PendingWork::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!done_.wait_for(lock, timeout, [this] { return completed_; })) {
    TW_THROW(TimeoutError, description_, " did not complete within ", timeout.count(),
             " ms (a peer rank may have failed or stalled; raise comm.timeout_s if the link is "
             "just slow)");
  }
  if (error_) std::rethrow_exception(error_);
}

void PendingWork::finish() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    completed_ = true;
  }
  done_.notify_all();
}

void PendingWork::fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::move(error);
    completed_ = true;
  }
  done_.notify_all();
}

std::unique_ptr<Work> completedWork() {
  auto work = std::make_unique<PendingWork>("no-op");
  work->finish();
  return work;
}

}  // namespace thinwire::comm
