// File: compressors/onebit_allreduce.h
//
// `OneBitAllreduce`: the two-phase 1-bit compressed allreduce of 1-bit Adam with worker and server
// error feedback (specs/compressors.md §5.2), over any comm::Communicator. Per tensor t of numel d
// (every rank passes the same list of tensors, same numels, in the same order):
//   d'  = d rounded up to a multiple of n * lcm(n, 8)          (n = worldSize; chunk c = d'/n)
//   1  x = pad(m) + worker_err                                  (padding zeros, worker_err[d'])
//   2  s_w = ||x||_2 / sqrt(d')                                 (ONE scale per tensor, padding in)
//   3  worker_err = x - s_w * sign+(x)                          (sign+(0) = sign+(-0) = +1)
//   4  chunk j of the sign bits goes to rank j
//   5  phase 1: one allToAll of [every tensor's s_w][every tensor's chunk j bits] per destination
//   6  server (rank r, its chunk r): y = (sum over ranks s = 0..n-1 of s_w[s] * sign_s) / n
//                                       + server_err            (server_err[c])
//   7  s_s = ||y||_2 / sqrt(c) ; server_err = y - s_s * sign+(y)
//   8  phase 2: one allgather of [every tensor's s_s][every tensor's chunk r bits of y]
//   9  out[chunk r] = s_s[r] * sign(bits of r); padding dropped; written back in place.
// See Note [One-bit arithmetic] for the exact float order (what an independent reference must
// reproduce bit for bit).
//
// Collectives: the scales travel inside the bit payloads, so one call issues exactly two
// collectives (one allToAll, one allgather) for ALL its tensors while keeping the per-tensor
// scales of §5.2: a flat buffer's bandwidth with per-tensor semantics. Sign bits are packed
// LSB-first (element 8k + b is bit b of byte k; bit 1 means x >= 0), as compressors/
// sign_compressor.h. Chunks are byte aligned because c is a multiple of lcm(n, 8).
// World size 1: nothing is compressed or sent (as DeepSpeed): the output is the input.
//
// Momentum mask (optional, per tensor, bool of the tensor's numel): masked-out elements (false)
// enter as exact zeros, keep worker and server error exactly 0 and come out as exactly 0, so an
// element whose input is always zero (a parameter that never gets a gradient) cannot accumulate
// error (the §5.3 pitfall). Padding elements are never masked.
//
// State: per tensor index i, "<i>.worker_error" (float32 [d']) and "<i>.server_error" (float32
// [c]); zero on first use; per rank (each rank serves another chunk). state()/loadState() make
// resume bit-exact.
// Wire: per call (n-1) * B (allToAll, B to every other rank) + (n-1) * B (allgather), B = 4 T +
// sum_t c_t / 8 bytes, T tensors: about 2 (n-1)/n * d/8, 1/32 of a float32 ring allreduce.
//
// Ownership: owns the error buffers and scratch; borrows tensors and the communicator per call.
// Threading: one thread at a time; the communicator's rules apply (lock-step on every rank).
//
// Example:
//   OneBitAllreduce onebit;
//   std::vector<at::Tensor> momenta = {m0, m1};          // float32, contiguous, same on all ranks
//   onebit.run(momenta, comm);                           // m0, m1 now the compressed average
//   StateDict saved = onebit.state();                    // per-rank error buffers
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "base/state_dict.h"
#include "comm/communicator.h"

namespace thinwire::compressors {

struct OneBitAllreduceOptions {
  std::chrono::milliseconds timeout = comm::kDefaultTimeout;  // bound on each collective's wait
};

class OneBitAllreduce {
 public:
  explicit OneBitAllreduce(OneBitAllreduceOptions options = {});

  // Blocking, collective, in place: every tensor of `tensors` becomes the 1-bit compressed
  // average over ranks (identical bytes on every rank). `masks` is empty (no mask) or has one
  // entry per tensor: undefined (no mask) or a bool tensor of the tensor's numel (false = masked
  // out, see the file comment). Throws InvalidArgument, before any communication, for a tensor
  // that is not contiguous float32, a mask of another numel or dtype, or a tensor list whose
  // count or numels differ from the one the error buffers were built for. Throws the
  // communicator's CommError / TimeoutError.
  void run(std::vector<at::Tensor>& tensors,
           comm::Communicator& comm,
           const std::vector<at::Tensor>& masks = {});

  // d rounded up to a multiple of worldSize * lcm(worldSize, 8) (0 stays 0).
  static int64_t paddedNumel(int64_t numel, int worldSize);

  // Bytes this rank handed to the communicator (= wire bytes by §0's formulas for allToAll and
  // allgather) since construction; not checkpointed.
  int64_t bytesSent() const { return bytesSent_; }

  // Copies of the error buffers ("<i>.worker_error", "<i>.server_error").
  StateDict state() const;
  // Replaces the error buffers by those of `state` (empty: back to zero on next use). Throws
  // DataError for a key that is not "<i>.worker_error|server_error" or a non-float32 tensor;
  // sizes are checked at the next run() (InvalidArgument).
  void loadState(const StateDict& state);

 private:
  void ensureBuffers(const std::vector<at::Tensor>& tensors, int worldSize);

  OneBitAllreduceOptions options_;
  std::vector<at::Tensor> workerErrors_;  // float32 [d'] per tensor
  std::vector<at::Tensor> serverErrors_;  // float32 [d'/n] per tensor
  at::Tensor sendBuffer_;                 // uint8 scratch, n blocks of B bytes
  at::Tensor receiveBuffer_;              // uint8 scratch, n blocks of B bytes
  at::Tensor serverBlock_;                // uint8 scratch, one block of B bytes
  at::Tensor gathered_;                   // uint8 scratch, n blocks of B bytes
  int64_t bytesSent_ = 0;
};

// Note [One-bit arithmetic]
// Float order, so that a plain-loop reference matches bit for bit:
//   * norms: sum of x_k * x_k over k = 0..len-1 in double, in index order (x_k widened to double
//     first); scale = float(sqrt(sum / len)).
//   * error: err_k = x_k - s (x_k >= 0) or x_k + s (x_k < 0, NaN counts as negative), in float.
//   * server average: acc = 0.0f; for s = 0..n-1: acc += s_w[s] * (+1 | -1) (float); y_k = acc /
//     float(n) + server_err_k (float).
//   * decode: +s or -s exactly.
// Masked-out elements: x_k = 0 (input ignored), err_k = 0, y_k = 0, output 0.

}  // namespace thinwire::compressors
