// Counts aten::scaled_dot_product_attention calls made on the constructing thread while an
// SdpaCounter is alive (an ATen RecordFunction callback), so a test can tell one attention
// call per layer from one per row and layer. One counter at a time per process.
#ifndef OFT_TESTS_SERVING_SDPA_COUNTER_H_
#define OFT_TESTS_SERVING_SDPA_COUNTER_H_

#include <atomic>
#include <memory>
#include <string_view>

#include "ATen/record_function.h"

namespace oft::testing {

class SdpaCounter {
 public:
  SdpaCounter() {
    Calls() = 0;
    handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(
        [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
          if (std::string_view(fn.name()) == "aten::scaled_dot_product_attention") ++Calls();
          return nullptr;
        }));
  }
  ~SdpaCounter() { at::removeCallback(handle_); }
  SdpaCounter(const SdpaCounter&) = delete;
  SdpaCounter& operator=(const SdpaCounter&) = delete;
  int calls() const { return Calls(); }

 private:
  static std::atomic<int>& Calls() {
    static std::atomic<int> calls{0};
    return calls;
  }
  at::CallbackHandle handle_;
};

}  // namespace oft::testing

#endif  // OFT_TESTS_SERVING_SDPA_COUNTER_H_
