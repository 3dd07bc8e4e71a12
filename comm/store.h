// File: comm/store.h
//
// `Store`: the control plane's key-value rendezvous store (as c10d's Store): ranks publish small
// values (addresses, a NCCL unique id, "I am ready") under string keys and wait for each other's.
// Values are bytes (std::string). add() keeps its counter as decimal text, so get() of a counter
// key returns e.g. "3". `PrefixStore` puts one store's keys under "<prefix>/" so independent
// users (a job, a restart generation, a sub-group) cannot collide.
//
// Contract: set() overwrites; get() and wait() block until every named key exists, at most
// `timeout`, and throw TimeoutError naming the keys still missing; an unreachable or failed store
// throws CommError. Nothing waits without a bound.
//
// Ownership: a PrefixStore borrows its base store, which must outlive it.
// Threading: implementations are safe to call from several threads at once.
//
// Example:
//   comm::TcpStoreServer server({.host = "127.0.0.1", .port = 0});       // rank 0 or the launcher
//   comm::TcpStore store({.host = "127.0.0.1", .port = server.port()});   // every rank
//   comm::PrefixStore job("job-17", store);
//   job.set("rank/" + std::to_string(rank), address);
//   const int64_t arrived = job.add("arrived", 1);
//   job.wait({"rank/0", "rank/1"}, std::chrono::seconds(60));
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace thinwire::comm {

class Store {
 public:
  virtual ~Store() = default;

  // Stores `value` under `key`, replacing any previous value, and wakes the waiters whose keys
  // are now all present. Blocking until the store has applied it.
  virtual void set(const std::string& key, const std::string& value) = 0;

  // The value of `key`, waiting up to `timeout` for it to be set. TimeoutError on expiry.
  virtual std::string get(const std::string& key, std::chrono::milliseconds timeout) = 0;

  // Atomically adds `delta` to the integer at `key` (a missing key counts as 0) and returns the
  // new value. InvalidArgument when the key holds something that is not a decimal integer.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;

  // Waits up to `timeout` until every key in `keys` is set. TimeoutError names the missing ones.
  virtual void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) = 0;

  // Whether every key in `keys` is set right now; never blocks on other ranks.
  virtual bool check(const std::vector<std::string>& keys) = 0;
};

// Every key of `base` accessed through it is "<prefix>/<key>".
class PrefixStore : public Store {
 public:
  // InvalidArgument for an empty prefix.
  PrefixStore(std::string prefix, Store& base);

  void set(const std::string& key, const std::string& value) override;
  std::string get(const std::string& key, std::chrono::milliseconds timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  bool check(const std::vector<std::string>& keys) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::string full(const std::string& key) const { return prefix_ + "/" + key; }
  std::vector<std::string> full(const std::vector<std::string>& keys) const;

  std::string prefix_;
  Store& base_;
};

}  // namespace thinwire::comm
