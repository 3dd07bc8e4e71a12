// File: comm/work.h
//
// `Work` is the asynchronous result of one collective (c10d's Work): the operation runs in the
// background; wait() blocks until it is done, rethrowing the error it stored.
//
// Threading: isCompleted() and wait() may be called from any thread, any number of times.
//
// Example:
//   std::unique_ptr<Work> work = comm.allreduce(t, {});
//   doOtherThings();
//   work->wait(std::chrono::seconds(60));   // throws TimeoutError after 60 s, CommError on failure
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace thinwire::comm {

class Work {
 public:
  virtual ~Work() = default;
  // Non-blocking: true once the operation has finished, successfully or not.
  virtual bool isCompleted() = 0;
  // Blocks until the operation finishes or `timeout` expires. Throws TimeoutError on expiry (the
  // operation may still be running; treat the communicator as broken), and rethrows the stored
  // CommError (or other Error) if the operation failed. Returns normally on success.
  virtual void wait(std::chrono::milliseconds timeout) = 0;
};

// A Work completed by whoever runs the operation: call finish() or fail() exactly once.
// Used by every CPU backend. `description` names the op in timeout messages
// ("allreduce #12 of 4096 float elements").
class PendingWork : public Work {
 public:
  explicit PendingWork(std::string description);
  bool isCompleted() override;
  void wait(std::chrono::milliseconds timeout) override;

  void finish();
  void fail(std::exception_ptr error);
  const std::string& description() const { return description_; }

 private:
  std::string description_;
  std::mutex mutex_;
  std::condition_variable done_;
  bool completed_ = false;
  std::exception_ptr error_;
};

// A Work that is already complete (used for no-op collectives, e.g. world size 1).
std::unique_ptr<Work> completedWork();

}  // namespace thinwire::comm
