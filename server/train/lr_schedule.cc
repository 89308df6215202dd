#include "server/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace oft {

double LearningRateAt(const TrainOptions& o, int64_t step, int64_t total_steps) {
  const double peak = o.learning_rate;
  const int64_t w = o.warmup_steps;
  if (step < w) return peak * static_cast<double>(step + 1) / static_cast<double>(w);
  const double q = static_cast<double>(step - w) /
                   static_cast<double>(std::max<int64_t>(1, total_steps - w));
  const double r = o.min_lr_ratio;
  switch (o.schedule) {
    case LrSchedule::kConstant:
      return peak;
    case LrSchedule::kLinear:
      return peak * (r + (1 - r) * (1 - q));
    case LrSchedule::kCosine:
      return peak * (r + (1 - r) * 0.5 * (1 + std::cos(M_PI * q)));
  }
  return peak;
}

}  // namespace oft
