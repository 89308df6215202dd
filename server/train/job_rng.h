// The random state of one training job: one CPU generator that makes every random draw of
// the run (the adapter's init when init_weights is false, module dropout's choice of
// blocks). Nothing of a job touches the process-wide generators, so jobs running
// concurrently in one process neither reseed nor consume each other's streams; and because
// every draw is made on the host, a run does not depend on the device it trains on: a
// checkpoint written on the CPU holds the whole random state a CUDA resume needs.
//
// Ownership: the generator handle is shared with the rotations of the job's adapter
// (LlamaModel::AddAdapter). Thread-compatibility: one job thread draws at a time; state
// reads and writes take the generator's own mutex.
#ifndef OFT_SERVER_TRAIN_JOB_RNG_H_
#define OFT_SERVER_TRAIN_JOB_RNG_H_

#include <cstdint>
#include <string>

#include "ATen/core/Generator.h"
#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace oft {

class JobRng {
 public:
  explicit JobRng(uint64_t seed);

  // Restarts the stream as a fresh generator seeded with `seed` would.
  void Reseed(uint64_t seed);
  // The handle to pass to the model and to ops that take a generator.
  const at::Generator& generator() const { return generator_; }

  // The full state as a uint8 tensor (for activation checkpointing's recomputation) and
  // back. SetState throws c10::Error on a tensor that is not such a state.
  at::Tensor State() const;
  void SetState(const at::Tensor& state);

  // The state as bytes (checkpoint file rng_cpu.bin) and back. INVALID_ARGUMENT (naming
  // `what`) when the bytes are not a CPU generator state.
  std::string SaveBytes() const;
  absl::Status LoadBytes(absl::string_view bytes, absl::string_view what);

 private:
  mutable at::Generator generator_;  // get_state() is non-const in ATen
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_JOB_RNG_H_
