// File: comm/op_queue.h
//
// `OpQueue` runs the operations of one communicator on one worker thread, strictly in the order
// they were submitted (the lock-step issue order of Note [Collective contract]). Each submitted
// task completes the `Work` returned to the caller: normally when the task returns, with the
// task's exception (rethrown by Work::wait()) when it throws.
//
// Ownership: the queue owns its worker thread and the queued tasks. The returned Work shares the
// completion state with the queue, so the caller may drop it at any time.
// Threading: submit() may be called from any thread; tasks run on the worker thread only (which
// is why MPI calls of a communicator all happen on one thread). The destructor stops the queue,
// lets already queued tasks run, and joins the worker.
//
// Example:
//   OpQueue queue(OpQueueOptions{.name = "mpi rank 0"});
//   std::unique_ptr<Work> work = queue.submit("allreduce #0", [&] { runAllreduce(); });
//   work->wait(std::chrono::seconds(60));   // rethrows what runAllreduce() threw
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "comm/work.h"

namespace thinwire::comm {

struct OpQueueOptions {
  // Shown in errors about the queue itself ("op queue 'mpi rank 0' is stopped").
  std::string name = "op queue";
  // Rank named by errors thrown on the worker thread (see setErrorRank); -1 when unknown.
  int errorRank = -1;
};

class OpQueue {
 public:
  explicit OpQueue(OpQueueOptions options = {});
  // Equivalent to stop(): already queued tasks still run; blocks until the worker has exited.
  ~OpQueue() noexcept;

  OpQueue(const OpQueue&) = delete;
  OpQueue& operator=(const OpQueue&) = delete;

  // Asynchronous: appends `task` to the FIFO and returns at once. The returned Work completes
  // after `task` has run; an exception thrown by `task` is stored and rethrown by Work::wait()
  // (thinwire::Error as thrown, any other exception converted to CommError). `description`
  // names the operation in timeout messages. Throws CommError if the queue is stopped.
  [[nodiscard]] std::unique_ptr<Work> submit(std::string description, std::function<void()> task);

  // Blocking: runs `task` on the worker thread after every earlier task, and waits for it.
  // Rethrows what `task` threw. Used for setup/teardown that must happen on the worker thread.
  void runSync(std::string description, std::function<void()> task);

  // Blocking: refuses new tasks, lets queued tasks run, then joins the worker. Idempotent.
  // Must not be called from the worker thread itself.
  void stop() noexcept;

 private:
  struct Task {
    std::shared_ptr<PendingWork> work;
    std::function<void()> run;
  };

  void workerLoop();

  OpQueueOptions options_;
  std::mutex mutex_;
  std::condition_variable wakeUp_;
  std::deque<Task> tasks_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace thinwire::comm
