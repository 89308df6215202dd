// The Trainer's checkpoint directory: <checkpoint_dir>/step-<n>/ holding adapter.safetensors,
// best_adapter.safetensors (when an eval ran), optimizer.pt (AdamW state), rng_cpu.bin (the
// job's generator, job_rng.h) and state.json (progress, data cursor, options, data hash,
// adapter identity, the device it was written on). Trainer::WriteCheckpoint and
// Trainer::LoadCheckpoint (trainer_checkpoint.cc) write and read them; these helpers are
// what the rest of the trainer and the tests need. Pure functions of the file system.
#ifndef OFT_SERVER_TRAIN_TRAINER_CHECKPOINT_H_
#define OFT_SERVER_TRAIN_TRAINER_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace oft {

// Complete checkpoints (directories step-<n> with a state.json) in `dir`, ascending by
// step; empty when `dir` is empty or missing.
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& dir);

// The warning a resume emits when the checkpoint was written on another device ("" when
// the devices match or the checkpoint does not say). A device change is not an error: the
// job's random state is device-independent, so the run continues; only bitwise equality
// with a one-device run is lost.
std::string DeviceChangeWarning(const std::string& written_on, const std::string& resumed_on);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAINER_CHECKPOINT_H_
