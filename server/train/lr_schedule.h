// The learning rate of each optimizer step: linear warmup, then constant, linear or cosine
// decay. Pure functions; thread-safe.
//
// With peak p = learning_rate, W = warmup_steps, N = total_steps, r = min_lr_ratio and the
// 0-based optimizer step k (0 <= k < N):
//   k < W:        p * (k + 1) / W                         (the peak is reached at k = W - 1)
//   otherwise:    q = (k - W) / max(1, N - W)  in [0, 1)
//     constant:   p
//     linear:     p * (r + (1 - r) * (1 - q))
//     cosine:     p * (r + (1 - r) * (1 + cos(pi q)) / 2)
// So the first step after warmup runs at the peak and no step runs at 0.
#ifndef OFT_SERVER_TRAIN_LR_SCHEDULE_H_
#define OFT_SERVER_TRAIN_LR_SCHEDULE_H_

#include <cstdint>

#include "server/train/train_options.h"

namespace oft {

// The learning rate for optimizer step `step` (0-based) of a run of `total_steps` steps.
double LearningRateAt(const TrainOptions& options, int64_t step, int64_t total_steps);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_LR_SCHEDULE_H_
