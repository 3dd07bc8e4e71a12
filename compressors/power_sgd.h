// File: compressors/power_sgd.h
//
// `PowerSgd`: low-rank gradient compression with error feedback (Vogels et al. 2019; the PyTorch
// DDP hook's semantics, specs/compressors.md §6.2). A matrix M (rows x cols) is sent as two thin
// factors P (rows x r) and Q (cols x r) found by one step of subspace power iteration, so a rank
// sends 4 r (rows + cols) bytes instead of 4 rows cols. P and Q of all ranks are summable: the
// exchange is two allreduces with compute in between, which is why PowerSGD is not a one-shot
// Compressor but runs the whole exchange for a batch of matrices itself.
//
// One run() over the tasks of a step, on every rank (r' = min(rank, rows, cols)):
//   M = grad + e                          (error feedback; M = grad without)
//   Q = previous Q (warm start) or fresh N(0,1), then orthonormalised
//   P = M Q  for every task  -> ONE allreduce (sum) of all P's  -> orthonormalise each P
//   Q = M^T P for every task -> ONE allreduce (sum) of all Q's  -> Q /= worldSize
//   grad = P Q^T (the same on every rank);  e = M - P Q^T
// See Note [PowerSGD state] for what is kept between steps and Note [Fresh Q] for the shared
// randomness.
//
// Ownership: a PowerSgd owns every layer's state (residual e and Q, float32, created on first
// use); it borrows the tasks' gradients and the communicator for the duration of run().
// Threading: one thread at a time per object (the engine's sync thread); run() issues its
// collectives on the communicator it is handed and parallelises its kernels with at::parallel_for
// (results do not depend on the thread count).
//
// Example:
//   PowerSgd powerSgd(PowerSgdOptions{});
//   std::vector<LowRankTask> tasks{{.layer = 0, .grad = weightGrad.view({out, -1}), .rank = 4}};
//   powerSgd.run(tasks, step, comm, comm::kDefaultTimeout);   // weightGrad now holds P Q^T
//   int64_t bytes = tasks[0].bytesSent;                         // what this rank put on the wire
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

#include "base/state_dict.h"
#include "comm/communicator.h"
#include "compressors/feedback.h"

namespace thinwire::compressors {

struct PowerSgdOptions {
  bool errorFeedback = true;          // keep e = M - P Q^T per layer and add it next step
  bool warmStart = true;              // reuse last step's Q (else a fresh Q every step)
  bool keepQOnRankChange = false;     // warm start across a rank change (Note [Rank change])
  uint64_t seed = 0;                  // shared seed of the fresh Q's (identical on every rank)
  double minCompressionRate = 2.0;    // worthCompressing() threshold, for the caller's split
  double orthogonalizationEps = 0.0;  // > 0: divide by (norm + eps), as the PyTorch hook does
};

// One matrix of one step. `grad` is a contiguous float32 CPU 2-D view (rows = shape[0] of the
// parameter, cols = the product of the rest) of this rank's local gradient on entry; run()
// overwrites it in place with the average estimate P Q^T, identical on every rank.
struct LowRankTask {
  LayerId layer = 0;      // identifies the layer's state; unique within one run()
  at::Tensor grad;        // in: local gradient; out: average estimate (same storage)
  int rank = 1;           // requested approximation rank (>= 1); r' = min(rank, rows, cols)
  int64_t bytesSent = 0;  // out: bytes this rank sent for the task (see PowerSgd::bytesSent)
};

class PowerSgd {
 public:
  // Throws InvalidArgument for minCompressionRate <= 0 or orthogonalizationEps < 0.
  explicit PowerSgd(PowerSgdOptions options);

  const PowerSgdOptions& options() const { return options_; }

  // True when the factors are worth sending: (rows + cols) * rank * minCompressionRate <
  // rows * cols (the PyTorch hook's test; a matrix failing it, and every vector, goes dense).
  static bool worthCompressing(int64_t rows, int64_t cols, int rank, double minCompressionRate);

  // Blocking collective: every rank calls it with the same tasks (layers, shapes, ranks) in the
  // same order, and the same `step`. Issues exactly two allreduces on `comm` (none when the
  // effective ranks of all tasks are 0, i.e. every matrix is empty), each waited for at most
  // `timeout`. On return every task's grad holds P Q^T, bitwise identical on every rank, and
  // bytesSent is set; the layers' e and Q are advanced. The first use of a layer, a change of its
  // rank (a layer-wise policy) and every step without warm start draw Q fresh (Note [Fresh Q]),
  // unless keepQOnRankChange (Note [Rank change]); a rank change keeps e.
  // Throws InvalidArgument (before touching any tensor or state) for a grad that is not a
  // contiguous float32 CPU matrix, rank < 1, a layer listed twice, or a layer whose shape differs
  // from its state's. Throws CommError / TimeoutError from the collectives; then the grads hold
  // unspecified values, the layers' state is unchanged, and the communicator must be recreated.
  void run(std::vector<LowRankTask>& tasks,
           const StepInfo& step,
           comm::Communicator& comm,
           std::chrono::milliseconds timeout);

  // Bytes one rank sends for a rows x cols matrix at `rank` with ring allreduces of P and Q:
  // 2 (worldSize - 1) / worldSize * 4 * r' * (rows + cols), r' = min(rank, rows, cols), rounded
  // down to whole bytes. 0 for worldSize 1.
  static int64_t bytesSent(int64_t rows, int64_t cols, int rank, int worldSize);

  // Per-rank state for bit-exact resume: "<layer>.e" (rows x cols, with error feedback) and
  // "<layer>.q" (Q^T, r' x cols, once a run for the layer has completed). Tensors are copies.
  StateDict state() const;
  // Replaces all state with `state` (as returned by state(); copied). Throws DataError on an
  // unknown key, a non-float32 or non-2-D tensor, or an e and q whose cols disagree.
  void loadState(const StateDict& state);

  // Orthonormalises the rows of `vectors` (r x length, contiguous float32 CPU) in place, in order,
  // by Gram-Schmidt in float32 with re-orthogonalisation: row j loses its components along rows
  // 0..j-1 (twice), then is divided by its norm (norm + eps when eps > 0). A row whose norm is 0
  // stays 0 (no NaN for a zero matrix). Returns the number of such zero rows. Deterministic.
  // Throws InvalidArgument for another dtype, layout or eps < 0.
  static int64_t orthonormalizeRows(at::Tensor& vectors, double eps);

  // The fresh Q^T (rank x cols, float32, N(0,1) entries, not yet orthonormalised) that layer
  // `layer` draws at step `step` under `seed`: a pure function of its arguments, identical on
  // every rank and process (Note [Fresh Q]).
  static at::Tensor freshQ(uint64_t seed, LayerId layer, int64_t step, int64_t rank, int64_t cols);

 private:
  struct LayerState {
    at::Tensor residual;  // e, rows x cols; undefined without error feedback
    at::Tensor q;         // Q^T, r' x cols; undefined until a run for the layer completed
  };

  PowerSgdOptions options_;
  std::map<LayerId, LayerState> layers_;
};

// Note [PowerSGD state]
// e is in gradient units and holds the local input minus the *global* reconstruction,
// e_i = M_i - P Q^T, as in the PyTorch hook: the sum over ranks of e_i equals sum_i M_i -
// n P Q^T, which is what error feedback needs. Q is stored transposed (Q^T, r' x cols) so that
// every factor column is contiguous; so are P's columns in the exchange buffer. During run() M is
// built in the task's grad (grad += e), so e and Q are only written after both collectives have
// succeeded: a failed exchange leaves the state as it was.

// Note [Fresh Q]
// Q is drawn from a counter-based generator (splitmix64, Box-Muller in double, rounded to float)
// keyed by hash(seed, layer, step), not from libtorch's generator: the values are a pure function
// of the key on every rank and every libtorch version, and drawing them touches no global RNG
// (dropout and data order stay unaffected). As in the PyTorch hook, Q is orthonormalised before
// P = M Q in every step, warm or fresh. A warm Q that has a zero column (a step whose matrix was
// zero leaves Q = M^T P = 0) would stay zero forever; such a Q is replaced by the fresh one of
// this step, which every rank does alike because Q is identical everywhere.

// Note [Rank change]
// A layer-wise policy changes a layer's rank every few hundred steps. By default the layer then
// starts from a fresh Q, as the L-GreCo hook does, and the subspace that the warm start built up
// over the previous steps is lost. With keepQOnRankChange the new Q^T starts from the fresh Q^T
// of this step with its first min(old, new) rows replaced by the old Q^T's first rows, then
// orthonormalised as usual: shrinking keeps the leading directions (Gram-Schmidt order puts the
// best-converged first), growing keeps all of them and adds fresh ones orthogonal to them. Q is
// identical on every rank, so the result is too. If the kept rows lose a column to
// orthonormalisation, the layer restarts fresh as in Note [Fresh Q].

}  // namespace thinwire::compressors
