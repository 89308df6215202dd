// How a serving adapter's rotation blocks are stored (ServingAdapter, serving_batch.h), as a
// plain enum so that the service layers that only configure it need no LibTorch headers.
#ifndef OFT_SERVER_MODEL_SERVED_ROTATIONS_H_
#define OFT_SERVER_MODEL_SERVED_ROTATIONS_H_

namespace oft {

enum class ServedRotations {
  kCompact,  // fp16 R - I for an fp32 model on the CPU's AVX paths, R elsewhere (default)
  kFp32,     // R in fp32 everywhere: exact, twice the compact form's bytes per decode row
};

}  // namespace oft

#endif  // OFT_SERVER_MODEL_SERVED_ROTATIONS_H_
