#include "kernels/emulation/emulator.h"

#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace thinwire::kernels::emulation {
namespace {

constexpr int kWarp = 32;
constexpr int64_t kMaxThreads = 1024;
constexpr int64_t kDefaultShared = 48 * 1024;
constexpr int64_t kOptInShared = 227 * 1024;
constexpr size_t kStackBytes = 256 * 1024;
constexpr int kInvalidConfiguration = 9;  // cudaErrorInvalidConfiguration

enum class State : uint8_t { kReady, kAtBarrier, kAtCollective, kDone };

struct Fiber {
  ucontext_t context{};
  State state = State::kReady;
  Dim3 thread;
  // The collective this fiber waits at.
  Collective kind = Collective::kShuffle;
  unsigned mask = 0;
  uint64_t bits = 0;
  int argument = 0;
  int width = kWarp;
  uint64_t received = 0;
};

// Stacks for up to kMaxThreads fibers, reserved once and reused (pages are touched on demand).
class Stacks {
 public:
  char* stack(int64_t t) {
    if (base_ == nullptr) {
      void* memory = mmap(nullptr, kStackBytes * kMaxThreads, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (memory == MAP_FAILED) throw std::runtime_error("emulator: cannot map fiber stacks");
      base_ = static_cast<char*>(memory);
    }
    return base_ + kStackBytes * t;
  }

 private:
  char* base_ = nullptr;
};

struct Launcher {
  ucontext_t scheduler{};
  std::vector<Fiber> fibers;
  const std::function<void()>* body = nullptr;
  int64_t current = 0;
  Dim3 block;
  Dim3 blockDim;
  Dim3 gridDim;
  std::vector<unsigned char> shared;
  std::string fault;  // set by a fiber; the scheduler throws it
};

Order gOrder = Order::kForward;
int gLaunchError = 0;
Launcher* gLauncher = nullptr;
Stacks gStacks;
std::map<const void*, int64_t> gSharedLimits;

// AddressSanitizer follows the stack switches only when told (its fiber annotations); without
// them it takes a fiber's frames for overflows of the scheduler's stack.
const void* gSchedulerStackBottom = nullptr;
size_t gSchedulerStackSize = 0;
void startSwitch(void** fakeStack, const void* bottom, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fakeStack, bottom, size);
#endif
}
void finishSwitch(void* fakeStack, const void** bottomOld, size_t* sizeOld) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fakeStack, bottomOld, sizeOld);
#endif
}

Fiber& self() { return gLauncher->fibers[static_cast<size_t>(gLauncher->current)]; }

void yieldToScheduler() {
  Fiber& fiber = self();
  void* fakeStack = nullptr;
  startSwitch(&fakeStack, gSchedulerStackBottom, gSchedulerStackSize);
  swapcontext(&fiber.context, &gLauncher->scheduler);
  finishSwitch(fakeStack, nullptr, nullptr);
}

void fiberMain() {
  finishSwitch(nullptr, &gSchedulerStackBottom, &gSchedulerStackSize);
  try {
    (*gLauncher->body)();
  } catch (const std::exception& e) {
    gLauncher->fault = std::string("exception in a kernel thread: ") + e.what();
  }
  self().state = State::kDone;
  // uc_link returns to the scheduler; this fiber's stack is not used again until prepare.
  startSwitch(nullptr, gSchedulerStackBottom, gSchedulerStackSize);
}

std::string where(const Launcher& launcher, int64_t thread) {
  std::ostringstream out;
  out << "block " << launcher.block.x << ", thread " << thread << " (warp " << thread / kWarp
      << ", lane " << thread % kWarp << ")";
  return out.str();
}

const char* name(Collective kind) {
  switch (kind) {
    case Collective::kShuffle:
      return "__shfl_sync";
    case Collective::kShuffleDown:
      return "__shfl_down_sync";
    case Collective::kShuffleXor:
      return "__shfl_xor_sync";
    case Collective::kBallot:
      return "__ballot_sync";
  }
  return "?";
}

[[noreturn]] void fault(const std::string& message) {
  throw std::logic_error("emulator: " + message);
}

// Releases the collective of the warp from thread warpStart when every lane it names has
// arrived. Returns whether it did.
bool releaseWarp(Launcher& launcher, int64_t warpStart) {
  const int64_t threads = static_cast<int64_t>(launcher.fibers.size());
  // The first waiting lane's mask decides who takes part.
  int64_t first = -1;
  for (int64_t t = warpStart; t < std::min(threads, warpStart + kWarp); ++t) {
    if (launcher.fibers[t].state == State::kAtCollective) {
      first = t;
      break;
    }
  }
  if (first < 0) return false;
  const Fiber& leader = launcher.fibers[first];
  bool complete = true;
  for (int lane = 0; lane < kWarp; ++lane) {
    if (((leader.mask >> lane) & 1u) == 0) continue;
    const int64_t t = warpStart + lane;
    if (t >= threads) {
      fault(std::string(name(leader.kind)) + " mask names lane " + std::to_string(lane) +
            ", which is outside the block; at " + where(launcher, first));
    }
    const Fiber& other = launcher.fibers[t];
    if (other.state == State::kDone) {
      fault(std::string(name(leader.kind)) + " mask names lane " + std::to_string(lane) +
            ", which has exited; at " + where(launcher, first));
    }
    if (other.state != State::kAtCollective) {
      complete = false;
      continue;
    }
    if (other.kind != leader.kind || other.mask != leader.mask) {
      fault(std::string("lanes of one warp wait at different collectives (") + name(leader.kind) +
            " and " + name(other.kind) + ", or different masks); at " + where(launcher, first) +
            " and lane " + std::to_string(lane));
    }
  }
  if (!complete) return false;
  if (((leader.mask >> (first - warpStart)) & 1u) == 0) {
    fault(std::string(name(leader.kind)) + " called by a lane outside its own mask; at " +
          where(launcher, first));
  }
  unsigned ballot = 0;
  for (int lane = 0; lane < kWarp; ++lane) {
    if ((leader.mask >> lane) & 1u) {
      if (launcher.fibers[warpStart + lane].bits != 0) ballot |= 1u << lane;
    }
  }
  for (int lane = 0; lane < kWarp; ++lane) {
    if (((leader.mask >> lane) & 1u) == 0) continue;
    Fiber& fiber = launcher.fibers[warpStart + lane];
    const int width = fiber.width;
    if (width <= 0 || width > kWarp || (width & (width - 1)) != 0) {
      fault("collective width " + std::to_string(width) + " is not a power of two up to 32");
    }
    const int segment = lane & ~(width - 1);
    int source = lane;
    switch (fiber.kind) {
      case Collective::kShuffle:
        source = segment + (fiber.argument & (width - 1));
        break;
      case Collective::kShuffleDown:
        source = (lane - segment) + fiber.argument < width ? lane + fiber.argument : lane;
        break;
      case Collective::kShuffleXor:
        source = ((lane ^ fiber.argument) & ~(width - 1)) == segment ? lane ^ fiber.argument : lane;
        break;
      case Collective::kBallot:
        break;
    }
    if (fiber.kind == Collective::kBallot) {
      fiber.received = ballot;
    } else {
      if (((leader.mask >> source) & 1u) == 0) {
        fault(std::string(name(fiber.kind)) + " reads lane " + std::to_string(source) +
              ", which is not in the mask; at " + where(launcher, warpStart + lane));
      }
      fiber.received = launcher.fibers[warpStart + source].bits;
    }
  }
  for (int lane = 0; lane < kWarp; ++lane) {
    if ((leader.mask >> lane) & 1u) launcher.fibers[warpStart + lane].state = State::kReady;
  }
  return true;
}

// A fresh fiber t at the start of the kernel. prepare and resume are kept out of line:
// getcontext and swapcontext return twice, and their callers' locals must not live in registers
// across them.
__attribute__((noinline)) void prepare(Launcher& launcher, int64_t t) {
  Fiber& fiber = launcher.fibers[static_cast<size_t>(t)];
  fiber = Fiber{};
  fiber.thread.x = static_cast<unsigned>(t);
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = gStacks.stack(t);
  fiber.context.uc_stack.ss_size = kStackBytes;
  fiber.context.uc_link = &launcher.scheduler;
  makecontext(&fiber.context, fiberMain, 0);
}

// Runs fiber t until it stops.
__attribute__((noinline)) void resume(Launcher& launcher, int64_t t) {
  launcher.current = t;
  void* fakeStack = nullptr;
  startSwitch(&fakeStack, gStacks.stack(t), kStackBytes);
  swapcontext(&launcher.scheduler, &launcher.fibers[static_cast<size_t>(t)].context);
  finishSwitch(fakeStack, nullptr, nullptr);
}

void runBlock(Launcher& launcher) {
  const int64_t threads = static_cast<int64_t>(launcher.fibers.size());
  for (int64_t t = 0; t < threads; ++t) prepare(launcher, t);
  const bool forward = gOrder == Order::kForward;
  const int64_t warps = (threads + kWarp - 1) / kWarp;
  while (true) {
    // Warp by warp: each runs until every lane has stopped at __syncthreads or has exited, its
    // collectives released as soon as their last lane arrives, so that a warp runs ahead of the
    // others as it may on the device.
    bool ran = false;
    for (int64_t w = 0; w < warps; ++w) {
      const int64_t start = (forward ? w : warps - 1 - w) * kWarp;
      const int64_t lanes = std::min(threads, start + kWarp) - start;
      do {
        for (int64_t lane = 0; lane < lanes; ++lane) {
          const int64_t t = start + (forward ? lane : lanes - 1 - lane);
          if (launcher.fibers[t].state != State::kReady) continue;
          resume(launcher, t);
          if (!launcher.fault.empty()) fault(launcher.fault + "; at " + where(launcher, t));
          ran = true;
        }
      } while (releaseWarp(launcher, start));
    }
    int64_t done = 0;
    int64_t atBarrier = 0;
    for (const Fiber& fiber : launcher.fibers) {
      done += fiber.state == State::kDone;
      atBarrier += fiber.state == State::kAtBarrier;
    }
    if (done == threads) return;
    if (atBarrier + done == threads) {
      for (Fiber& fiber : launcher.fibers) {
        if (fiber.state == State::kAtBarrier) fiber.state = State::kReady;
      }
      continue;
    }
    if (!ran) {
      std::ostringstream out;
      out << "block " << launcher.block.x << " cannot progress: " << done << " threads exited, "
          << atBarrier << " wait at __syncthreads, the rest at warp collectives whose lanes "
          << "never all arrive (a barrier or collective under divergent control flow)";
      fault(out.str());
    }
  }
}

}  // namespace

void setOrder(Order order) { gOrder = order; }
Order order() { return gOrder; }

const Dim3& threadIndex() { return self().thread; }
const Dim3& blockIndex() { return gLauncher->block; }
const Dim3& blockDimension() { return gLauncher->blockDim; }
const Dim3& gridDimension() { return gLauncher->gridDim; }

void syncThreads() {
  self().state = State::kAtBarrier;
  yieldToScheduler();
}

uint64_t warpCollective(Collective kind, unsigned mask, uint64_t bits, int argument, int width) {
  Fiber& fiber = self();
  fiber.state = State::kAtCollective;
  fiber.kind = kind;
  fiber.mask = mask;
  fiber.bits = bits;
  fiber.argument = argument;
  fiber.width = width;
  yieldToScheduler();
  return self().received;
}

int takeLaunchError() {
  const int error = gLaunchError;
  gLaunchError = 0;
  return error;
}

void* dynamicSharedBytes() { return gLauncher->shared.data(); }

void allowDynamicShared(const void* kernel, int bytes) { gSharedLimits[kernel] = bytes; }

void run(const void* kernel,
         int64_t blocks,
         int64_t threads,
         int64_t sharedBytes,
         const std::function<void()>& body) {
  if (gLauncher != nullptr) fault("a launch from inside a kernel");
  const auto limit = gSharedLimits.find(kernel);
  const int64_t sharedLimit = std::min(kOptInShared, limit == gSharedLimits.end()
                                                         ? kDefaultShared
                                                         : std::max(kDefaultShared, limit->second));
  if (blocks < 1 || blocks > 0x7fffffff || threads < 1 || threads > kMaxThreads ||
      sharedBytes < 0 || sharedBytes > sharedLimit) {
    gLaunchError = kInvalidConfiguration;
    return;
  }
  Launcher launcher;
  launcher.fibers.resize(static_cast<size_t>(threads));
  launcher.body = &body;
  launcher.blockDim.x = static_cast<unsigned>(threads);
  launcher.gridDim.x = static_cast<unsigned>(blocks);
  launcher.shared.assign(static_cast<size_t>(sharedBytes), 0xff);  // malloc: 16-byte aligned
  gLauncher = &launcher;
  try {
    for (int64_t b = 0; b < blocks; ++b) {
      launcher.block.x = static_cast<unsigned>(b);
      std::fill(launcher.shared.begin(), launcher.shared.end(), 0xff);
      runBlock(launcher);
    }
  } catch (...) {
    gLauncher = nullptr;
    throw;
  }
  gLauncher = nullptr;
}

}  // namespace thinwire::kernels::emulation
