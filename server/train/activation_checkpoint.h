// Activation checkpointing of decoder layers (ForwardOptions::layer_runner): a layer runs
// without recording its graph, and backward recomputes it and differentiates the
// recomputation, trading compute for the memory of the layer's saved activations.
//
// What Run() keeps for a layer, and backward restores around the recomputation:
//   * the layer's input (saved with autograd's version check);
//   * the layer body (ForwardOptions' contract: callable again later, owning what it needs);
//   * the job generator's state (module dropout draws the same blocks again);
//   * the autocast state of the calling thread at forward time, for the CPU and the CUDA
//     device types: enabled flag *and* dtype. Backward runs after the trainer's autocast
//     scope has closed, when the dtype is back at its default (fp16 for CUDA), so
//     restoring only the flag would recompute a bf16 layer in fp16.
// The adapter parameters are inputs of the recorded function (gradients flow to them) but
// are not saved tensors: COFT projects each layer's oft_r in place (without grad) when the
// layer builds its rotation, so a saved copy would fail autograd's version check. The
// recomputation reads them as they are at backward time, which is what the forward read
// (the projection is idempotent).
//
// Ownership and threads: a LayerCheckpointer belongs to one training thread; the layers it
// records must stay alive until their backward has run, so call Clear() only after
// backward (or when abandoning a step).
#ifndef OFT_SERVER_TRAIN_ACTIVATION_CHECKPOINT_H_
#define OFT_SERVER_TRAIN_ACTIVATION_CHECKPOINT_H_

#include <deque>
#include <functional>
#include <vector>

#include "ATen/core/Tensor.h"
#include "server/train/job_rng.h"
#include "server/train/precision.h"

namespace oft {

using LayerBody = std::function<at::Tensor(const at::Tensor&)>;

class LayerCheckpointer {
 public:
  // `params`: the trainable tensors any layer may use (leaves; not owned beyond handles).
  // `rng`: the job's generator, not owned, must outlive this object.
  LayerCheckpointer(std::vector<at::Tensor> params, JobRng* rng);
  LayerCheckpointer(const LayerCheckpointer&) = delete;
  LayerCheckpointer& operator=(const LayerCheckpointer&) = delete;

  // body(hidden), recorded for recomputation in backward. Throws c10::Error like any op.
  at::Tensor Run(const LayerBody& body, const at::Tensor& hidden);
  // Forgets the recorded layers (after the step's backward).
  void Clear() { layers_.clear(); }

  // What a recorded layer carries (public for the autograd function only).
  struct Layer {
    LayerBody body;
    const std::vector<at::Tensor>* params;
    JobRng* rng;
    at::Tensor rng_state;
    AutocastState autocast;
  };

 private:
  std::vector<at::Tensor> params_;
  JobRng* rng_;
  std::deque<Layer> layers_;  // stable addresses: autograd contexts point at entries
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_ACTIVATION_CHECKPOINT_H_
