#include "compressors/power_sgd.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

// Rows (or columns) per at::parallel_for chunk: enough work per chunk to amortise the dispatch.
constexpr int64_t kRowGrain = 16;
constexpr int64_t kColumnGrain = 1024;

uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t freshQKey(uint64_t seed, LayerId layer, int64_t step) {
  return mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(layer)) ^ static_cast<uint64_t>(step));
}

// Dot product with eight fixed partial sums: vectorisable, and the same bits whatever thread
// runs it.
float dot(const float* a, const float* b, int64_t length) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= length; i += 8) {
    for (int lane = 0; lane < 8; ++lane) partial[lane] += a[i + lane] * b[i + lane];
  }
  for (int lane = 0; i < length; ++i, ++lane) partial[lane] += a[i] * b[i];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

void checkTask(const LowRankTask& task) {
  const at::Tensor& grad = task.grad;
  TW_CHECK(grad.defined(), "PowerSGD task of layer ", task.layer, " has no gradient");
  TW_CHECK(grad.device().is_cpu() && grad.scalar_type() == at::kFloat && grad.dim() == 2 &&
               grad.is_contiguous(),
           "PowerSGD gradient of layer ", task.layer,
           " must be a contiguous float32 CPU matrix, got ", grad.toString(), " of shape ",
           grad.sizes());
  TW_CHECK(task.rank >= 1, "PowerSGD rank of layer ", task.layer, " must be >= 1, got ", task.rank);
}

int64_t effectiveRank(int64_t rows, int64_t cols, int rank) {
  return std::min<int64_t>({static_cast<int64_t>(rank), rows, cols});
}

// qt (r x cols) and m (rows x cols) -> pt (r x rows): pt[k][i] = <m row i, qt row k>.
void multiplyMQ(const float* m, const float* qt, float* pt, int64_t rows, int64_t cols, int64_t r) {
  at::parallel_for(0, rows, kRowGrain, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t k = 0; k < r; ++k) pt[k * rows + i] = dot(m + i * cols, qt + k * cols, cols);
    }
  });
}

// pt (r x rows) and m (rows x cols) -> qt (r x cols): qt[k] = sum_i pt[k][i] * m row i, summed in
// row order whatever the column split, so the result does not depend on the thread count.
void multiplyMtP(
    const float* m, const float* pt, float* qt, int64_t rows, int64_t cols, int64_t r) {
  at::parallel_for(0, cols, kColumnGrain, [=](int64_t begin, int64_t end) {
    for (int64_t k = 0; k < r; ++k) std::fill(qt + k * cols + begin, qt + k * cols + end, 0.0f);
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = m + i * cols;
      for (int64_t k = 0; k < r; ++k) {
        const float a = pt[k * rows + i];
        float* out = qt + k * cols;
        for (int64_t j = begin; j < end; ++j) out[j] += a * row[j];
      }
    }
  });
}

// grad (holding M) <- P Q^T; with `residual`, residual <- M - P Q^T. One pass over the matrix.
void reconstruct(float* grad,
                 float* residual,
                 const float* pt,
                 const float* qt,
                 int64_t rows,
                 int64_t cols,
                 int64_t r) {
  at::parallel_for(0, rows, kRowGrain, [=](int64_t begin, int64_t end) {
    std::vector<float> estimate(static_cast<size_t>(cols));
    for (int64_t i = begin; i < end; ++i) {
      std::fill(estimate.begin(), estimate.end(), 0.0f);
      for (int64_t k = 0; k < r; ++k) {
        const float a = pt[k * rows + i];
        const float* q = qt + k * cols;
        for (int64_t j = 0; j < cols; ++j) estimate[j] += a * q[j];
      }
      float* out = grad + i * cols;
      if (residual != nullptr) {
        float* e = residual + i * cols;
        for (int64_t j = 0; j < cols; ++j) e[j] = out[j] - estimate[j];
      }
      std::copy(estimate.begin(), estimate.end(), out);
    }
  });
}

int64_t orthonormalize(float* vectors, int64_t r, int64_t length, double eps) {
  int64_t zeroRows = 0;
  for (int64_t j = 0; j < r; ++j) {
    float* v = vectors + j * length;
    // Two projection passes: after one, a row that was nearly dependent on the earlier ones keeps
    // rounding error along them ("twice is enough").
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t i = 0; i < j; ++i) {
        const float* u = vectors + i * length;
        const float c = dot(u, v, length);
        for (int64_t t = 0; t < length; ++t) v[t] -= c * u[t];
      }
    }
    const float norm = std::sqrt(dot(v, v, length));
    if (norm == 0.0f) {
      ++zeroRows;
      continue;
    }
    const float scale = 1.0f / static_cast<float>(norm + eps);
    for (int64_t t = 0; t < length; ++t) v[t] *= scale;
  }
  return zeroRows;
}

void fillFresh(uint64_t key, float* out, int64_t numel) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  constexpr double kInv2To53 = 1.0 / 9007199254740992.0;
  for (int64_t pair = 0; 2 * pair < numel; ++pair) {
    const uint64_t first = mix64(key + 2 * static_cast<uint64_t>(pair));
    const uint64_t second = mix64(key + 2 * static_cast<uint64_t>(pair) + 1);
    const double u1 = (static_cast<double>(first >> 11) + 0.5) * kInv2To53;  // (0, 1): log finite
    const double u2 = static_cast<double>(second >> 11) * kInv2To53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    out[2 * pair] = static_cast<float>(radius * std::cos(kTwoPi * u2));
    if (2 * pair + 1 < numel)
      out[2 * pair + 1] = static_cast<float>(radius * std::sin(kTwoPi * u2));
  }
}

// Where one task's factors lie in the exchange buffers, and what it starts from.
struct TaskPlan {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t r = 0;
  int64_t pOffset = 0;  // elements into the P buffer
  int64_t qOffset = 0;  // elements into the Q buffer
};

}  // namespace

PowerSgd::PowerSgd(PowerSgdOptions options) : options_(options) {
  TW_CHECK(options_.minCompressionRate > 0, "PowerSGD minCompressionRate must be > 0, got ",
           options_.minCompressionRate);
  TW_CHECK(options_.orthogonalizationEps >= 0, "PowerSGD orthogonalizationEps must be >= 0, got ",
           options_.orthogonalizationEps);
}

bool PowerSgd::worthCompressing(int64_t rows, int64_t cols, int rank, double minCompressionRate) {
  return static_cast<double>(rows + cols) * rank * minCompressionRate <
         static_cast<double>(rows) * static_cast<double>(cols);
}

int64_t PowerSgd::bytesSent(int64_t rows, int64_t cols, int rank, int worldSize) {
  TW_CHECK(worldSize >= 1, "PowerSGD bytesSent: worldSize must be >= 1, got ", worldSize);
  const int64_t factorBytes = 4 * effectiveRank(rows, cols, rank) * (rows + cols);
  return 2 * (worldSize - 1) * factorBytes / worldSize;
}

int64_t PowerSgd::orthonormalizeRows(at::Tensor& vectors, double eps) {
  TW_CHECK(vectors.defined() && vectors.device().is_cpu() && vectors.scalar_type() == at::kFloat &&
               vectors.dim() == 2 && vectors.is_contiguous(),
           "orthonormalizeRows needs a contiguous float32 CPU matrix");
  TW_CHECK(eps >= 0, "orthonormalizeRows: eps must be >= 0, got ", eps);
  return orthonormalize(vectors.data_ptr<float>(), vectors.size(0), vectors.size(1), eps);
}

at::Tensor PowerSgd::freshQ(
    uint64_t seed, LayerId layer, int64_t step, int64_t rank, int64_t cols) {
  TW_CHECK(rank >= 0 && cols >= 0, "freshQ: rank and cols must be >= 0, got ", rank, " and ", cols);
  at::Tensor q = at::empty({rank, cols}, at::kFloat);
  fillFresh(freshQKey(seed, layer, step), q.data_ptr<float>(), q.numel());
  return q;
}

void PowerSgd::run(std::vector<LowRankTask>& tasks,
                   const StepInfo& step,
                   comm::Communicator& comm,
                   std::chrono::milliseconds timeout) {
  // Validate everything before the first write, so a caller error leaves grads and state intact.
  std::vector<TaskPlan> plans(tasks.size());
  std::set<LayerId> seen;
  int64_t pNumel = 0;
  int64_t qNumel = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const LowRankTask& task = tasks[t];
    checkTask(task);
    TW_CHECK(seen.insert(task.layer).second, "PowerSGD layer ", task.layer,
             " is listed twice in one run");
    TaskPlan& plan = plans[t];
    plan.rows = task.grad.size(0);
    plan.cols = task.grad.size(1);
    plan.r = effectiveRank(plan.rows, plan.cols, task.rank);
    plan.pOffset = pNumel;
    plan.qOffset = qNumel;
    pNumel += plan.r * plan.rows;
    qNumel += plan.r * plan.cols;
    auto found = layers_.find(task.layer);
    if (found != layers_.end()) {
      const LayerState& state = found->second;
      TW_CHECK(!state.residual.defined() ||
                   (state.residual.size(0) == plan.rows && state.residual.size(1) == plan.cols),
               "PowerSGD layer ", task.layer, " was ", state.residual.sizes(), ", now ",
               task.grad.sizes());
      TW_CHECK(!state.q.defined() || state.q.size(1) == plan.cols, "PowerSGD layer ", task.layer,
               " had ", state.q.size(1), " columns, now ", plan.cols);
    }
  }
  const int worldSize = comm.worldSize();

  at::Tensor pBuffer = at::empty({pNumel}, at::kFloat);
  at::Tensor qBuffer = at::empty({qNumel}, at::kFloat);
  float* pData = pBuffer.data_ptr<float>();
  float* qData = qBuffer.data_ptr<float>();

  // M = grad + e, in grad; the starting Q^T of each task in its slot of the Q buffer; P = M Q.
  // Nothing in layers_ changes before both collectives have succeeded (Note [PowerSGD state]).
  for (size_t t = 0; t < tasks.size(); ++t) {
    LowRankTask& task = tasks[t];
    const TaskPlan& plan = plans[t];
    auto found = layers_.find(task.layer);
    const LayerState* state = found == layers_.end() ? nullptr : &found->second;
    if (options_.errorFeedback && state != nullptr && state->residual.defined()) {
      task.grad.add_(state->residual);
    }
    if (plan.r == 0) continue;
    float* qt = qData + plan.qOffset;
    const int64_t qtNumel = plan.r * plan.cols;
    const bool haveQ = options_.warmStart && state != nullptr && state->q.defined();
    const bool warm = haveQ && state->q.size(0) == plan.r;
    bool fresh = !warm;
    if (warm) {
      std::copy(state->q.data_ptr<float>(), state->q.data_ptr<float>() + qtNumel, qt);
      // See Note [Fresh Q]: a warm Q that lost a column restarts fresh.
      fresh = orthonormalize(qt, plan.r, plan.cols, options_.orthogonalizationEps) > 0;
    } else if (haveQ && options_.keepQOnRankChange && state->q.size(0) > 0) {
      // See Note [Rank change]: this step's fresh rows, the old leading rows over the first ones
      // (a rank that shrinks keeps old rows only, so it draws nothing).
      const int64_t kept = std::min<int64_t>(plan.r, state->q.size(0)) * plan.cols;
      if (kept < qtNumel) fillFresh(freshQKey(options_.seed, task.layer, step.step), qt, qtNumel);
      std::copy(state->q.data_ptr<float>(), state->q.data_ptr<float>() + kept, qt);
      fresh = orthonormalize(qt, plan.r, plan.cols, options_.orthogonalizationEps) > 0;
    }
    if (fresh) {
      fillFresh(freshQKey(options_.seed, task.layer, step.step), qt, qtNumel);
      orthonormalize(qt, plan.r, plan.cols, options_.orthogonalizationEps);
    }
    multiplyMQ(task.grad.data_ptr<float>(), qt, pData + plan.pOffset, plan.rows, plan.cols, plan.r);
  }
  const bool anythingToSend = pNumel + qNumel > 0;

  if (anythingToSend) {
    comm.allreduce(pBuffer, comm::AllreduceOptions{comm::ReduceOp::kSum})->wait(timeout);
  }

  // Orthonormalise each P, then Q = M^T P (overwriting the starting Q, no longer needed).
  for (size_t t = 0; t < tasks.size(); ++t) {
    const TaskPlan& plan = plans[t];
    if (plan.r == 0) continue;
    float* pt = pData + plan.pOffset;
    orthonormalize(pt, plan.r, plan.rows, options_.orthogonalizationEps);
    multiplyMtP(tasks[t].grad.data_ptr<float>(), pt, qData + plan.qOffset, plan.rows, plan.cols,
                plan.r);
  }

  if (anythingToSend) {
    comm.allreduce(qBuffer, comm::AllreduceOptions{comm::ReduceOp::kSum})->wait(timeout);
    qBuffer.div_(static_cast<float>(worldSize));
  }

  // grad = P Q^T, e = M - P Q^T, and keep Q^T for the next warm start.
  for (size_t t = 0; t < tasks.size(); ++t) {
    LowRankTask& task = tasks[t];
    const TaskPlan& plan = plans[t];
    LayerState& state = layers_[task.layer];
    task.bytesSent = bytesSent(plan.rows, plan.cols, task.rank, worldSize);
    if (options_.errorFeedback && !state.residual.defined()) {
      state.residual = at::empty({plan.rows, plan.cols}, at::kFloat);  // reconstruct() fills it
    }
    if (plan.r == 0) {
      if (state.residual.defined()) state.residual.copy_(task.grad);  // empty: nothing to send
      continue;
    }
    const float* qt = qData + plan.qOffset;
    reconstruct(task.grad.data_ptr<float>(),
                options_.errorFeedback ? state.residual.data_ptr<float>() : nullptr,
                pData + plan.pOffset, qt, plan.rows, plan.cols, plan.r);
    state.q = qBuffer.narrow(0, plan.qOffset, plan.r * plan.cols).view({plan.r, plan.cols}).clone();
  }
}

StateDict PowerSgd::state() const {
  StateDict out;
  for (const auto& [layer, state] : layers_) {
    const std::string prefix = std::to_string(layer);
    if (state.residual.defined()) out[prefix + ".e"] = state.residual.clone();
    if (state.q.defined()) out[prefix + ".q"] = state.q.clone();
  }
  return out;
}

void PowerSgd::loadState(const StateDict& state) {
  std::map<LayerId, LayerState> layers;
  for (const auto& [key, tensor] : state) {
    const size_t dotAt = key.find('.');
    size_t parsed = 0;
    LayerId layer = 0;
    bool numeric = dotAt != std::string::npos && dotAt > 0;
    if (numeric) {
      try {
        layer = std::stoll(key.substr(0, dotAt), &parsed);
      } catch (const std::exception&) {
        numeric = false;
      }
    }
    const std::string name = numeric ? key.substr(dotAt + 1) : std::string();
    if (!numeric || parsed != dotAt || (name != "e" && name != "q")) {
      TW_THROW(DataError, "PowerSGD state has an unknown entry '", key,
               "', expected '<layer>.e' or '<layer>.q'");
    }
    if (name == "e" && !options_.errorFeedback) {
      TW_THROW(DataError, "PowerSGD state has a residual '", key,
               "' but error feedback is off in this run");
    }
    if (!tensor.defined() || tensor.scalar_type() != at::kFloat || tensor.dim() != 2) {
      TW_THROW(DataError, "PowerSGD state '", key, "' must be a float32 matrix");
    }
    at::Tensor copy = tensor.to(at::kCPU).contiguous().clone();
    if (name == "e") {
      layers[layer].residual = copy;
    } else {
      layers[layer].q = copy;
    }
  }
  for (const auto& [layer, entry] : layers) {
    if (entry.residual.defined() && entry.q.defined() &&
        entry.residual.size(1) != entry.q.size(1)) {
      TW_THROW(DataError, "PowerSGD state of layer ", layer, ": e has ", entry.residual.size(1),
               " columns but q has ", entry.q.size(1));
    }
  }
  layers_ = std::move(layers);
}

}  // namespace thinwire::compressors
