// File: optim/lr_schedule.h
//
// Learning-rate schedules as pure functions of the step: linear warm-up from 0 to `baseLr` over
// `warmupSteps`, then constant, cosine decay to `minLrRatio * baseLr` at `totalSteps`, or step
// decay by `gamma` every `stepSize` steps (counted after warm-up). Being stateless, a schedule
// needs nothing in a checkpoint beyond the step counter.
//
// Example:
//   LrSchedule schedule({.kind = ScheduleKind::kCosine, .baseLr = 0.1, .warmupSteps = 100,
//                        .totalSteps = 2000});
//   double lr = schedule.lrAt(step);   // step counted from 0
#pragma once

#include <cstdint>
#include <string>

namespace thinwire::optim {

enum class ScheduleKind { kConstant, kCosine, kStep };

// Parses "constant" | "cosine" | "step".
ScheduleKind parseScheduleKind(const std::string& name);

struct LrScheduleOptions {
  ScheduleKind kind = ScheduleKind::kConstant;
  double baseLr = 0.1;
  int64_t warmupSteps = 0;
  int64_t totalSteps = 1;
  double minLrRatio = 0.0;
  int64_t stepSize = 1000;
  double gamma = 0.1;
};

class LrSchedule {
 public:
  // Throws InvalidArgument for baseLr <= 0, negative warm-up, totalSteps < 1, stepSize < 1.
  explicit LrSchedule(LrScheduleOptions options);
  // Learning rate of optimizer step `step` (0-based). Warm-up step s uses baseLr*(s+1)/warmup.
  double lrAt(int64_t step) const;

 private:
  LrScheduleOptions options_;
};

}  // namespace thinwire::optim
