#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace thinwire::optim {

ScheduleKind parseScheduleKind(const std::string& name) {
  if (name == "constant") return ScheduleKind::kConstant;
  if (name == "cosine") return ScheduleKind::kCosine;
  if (name == "step") return ScheduleKind::kStep;
  TW_THROW(InvalidArgument, "schedule must be one of constant|cosine|step, got '", name, "'");
}

LrSchedule::LrSchedule(LrScheduleOptions options) : options_(options) {
  TW_CHECK(options_.baseLr > 0, "base learning rate must be > 0, got ", options_.baseLr);
  TW_CHECK(options_.warmupSteps >= 0, "warm-up steps must be >= 0, got ", options_.warmupSteps);
  TW_CHECK(options_.totalSteps >= 1, "total steps must be >= 1, got ", options_.totalSteps);
  TW_CHECK(options_.stepSize >= 1, "step size must be >= 1, got ", options_.stepSize);
}

double LrSchedule::lrAt(int64_t step) const {
  const double base = options_.baseLr;
  if (step < options_.warmupSteps) {
    return base * static_cast<double>(step + 1) / static_cast<double>(options_.warmupSteps);
  }
  const int64_t after = step - options_.warmupSteps;
  switch (options_.kind) {
    case ScheduleKind::kConstant:
      return base;
    case ScheduleKind::kCosine: {
      const int64_t span = std::max<int64_t>(1, options_.totalSteps - options_.warmupSteps);
      const double progress = std::min(1.0, static_cast<double>(after) / static_cast<double>(span));
      const double floor = options_.minLrRatio * base;
      return floor + (base - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
    case ScheduleKind::kStep:
      return base * std::pow(options_.gamma, static_cast<double>(after / options_.stepSize));
  }
  TW_ASSERT(false, "unhandled schedule kind");
}

}  // namespace thinwire::optim
