#pragma once

// Cross-entropy of a linear head's logits without materialising the [tokens, vocab] logits.
//
// LinearCrossEntropy(h, weight, bias, targets, options) returns, as an fp32 scalar, the SUM
// over tokens i with targets[i] != options.ignore_index of
//     logsumexp(z_i) - z_i[targets[i]],   z_i = post(h_i W^T + b)
// where post divides by options.divisor and then, with a soft-cap c, applies c * tanh(. / c).
// That is exactly LlamaModel's head (lm_head, Granite's divisor, Gemma 2's soft-cap) followed
// by at::cross_entropy_loss(logits.float(), targets, {}, Sum, ignore_index), up to fp32
// rounding: the logits are computed in h's dtype and the softmax in fp32, as there.
//
// How: the tokens are processed in chunks (options.chunk_rows, or a size chosen from the
// vocabulary so one chunk's logits stay cache-sized); each chunk's logits live in one reused
// buffer. With autograd recording and h, weight or bias requiring grad, the gradient of the
// sum w.r.t. each of them is computed in the same pass ((softmax - onehot) of the chunk times
// W) and kept; backward only scales it by the incoming gradient. Compared with logits + loss
// this removes four passes over [tokens, vocab] fp32 tensors (log-softmax, its backward, the
// one-hot gradient, the logits themselves) and their page faults, and the loss's memory peak.
//
// Shapes: h [N, H] (float32, bfloat16, float16 or float64), weight [V, H] and bias [V] (or
// undefined) in h's dtype and on its device, targets [N] int64. A target outside [0, V) that
// is not ignore_index throws c10::Error naming it (CPU targets are checked on the host; device
// targets are checked without a host synchronisation only by the gather's own bounds check).

#include <cstdint>
#include <optional>

#include "ATen/core/Tensor.h"

namespace oft {

struct LinearCrossEntropyOptions {
  int64_t ignore_index = -100;
  double divisor = 1.0;            // logits / divisor (Granite's logits_scaling)
  std::optional<double> softcap;   // then c * tanh(logits / c) (Gemma 2's final soft-cap)
  int64_t chunk_rows = 0;          // tokens per chunk; 0: chosen from the vocabulary size
};

at::Tensor LinearCrossEntropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& targets, const LinearCrossEntropyOptions& options = {});

}  // namespace oft
