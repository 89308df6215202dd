#include "server/train/job_rng.h"

#include <cstring>
#include <mutex>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "absl/strings/str_cat.h"
#include "server/common/torch_boundary.h"

namespace oft {

JobRng::JobRng(uint64_t seed) : generator_(at::detail::createCPUGenerator(seed)) {}

void JobRng::Reseed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_current_seed(seed);
}

at::Tensor JobRng::State() const {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  return generator_.get_state();
}

void JobRng::SetState(const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_state(state);
}

std::string JobRng::SaveBytes() const {
  at::Tensor state = State().contiguous();
  return std::string(reinterpret_cast<const char*>(state.data_ptr<uint8_t>()),
                     static_cast<size_t>(state.numel()));
}

absl::Status JobRng::LoadBytes(absl::string_view bytes, absl::string_view what) {
  absl::Status st = TorchCall("JobRng.LoadBytes", [&] {
    at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    std::memcpy(state.data_ptr<uint8_t>(), bytes.data(), bytes.size());
    SetState(state);
  });
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not a CPU generator state (", bytes.size(), " bytes): ", st.message()));
  }
  return st;
}

}  // namespace oft
