// The one place where LibTorch exceptions become absl::Status.
//
// LibTorch reports errors by throwing (c10::Error and subclasses). No exception may
// cross a module API of ours, so every public function that calls into LibTorch
// wraps its body in TorchCall(). Mapping:
//   c10::OutOfMemoryError              -> RESOURCE_EXHAUSTED
//   c10::Error of a CUDA/cuBLAS/cuSOLVER allocation failure (CUBLAS_STATUS_ALLOC_FAILED,
//     "CUDA error: out of memory", cudaErrorMemoryAllocation) -> RESOURCE_EXHAUSTED
//   c10::ValueError, IndexError, TypeError, LinAlgError -> INVALID_ARGUMENT
//   any other std::exception           -> INTERNAL
// Thread-safe; stateless.
#ifndef OFT_SERVER_COMMON_TORCH_BOUNDARY_H_
#define OFT_SERVER_COMMON_TORCH_BOUNDARY_H_

#include <exception>
#include <functional>
#include "absl/strings/string_view.h"
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace oft {
namespace internal {
template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};
}  // namespace internal

// Converts the exception currently being handled into a Status. `what` prefixes the
// message (e.g. "OftLinear.forward"). Must be called inside a catch block.
absl::Status StatusFromCurrentException(absl::string_view what);

// Runs `fn` and converts any exception it throws. `fn` returns void, absl::Status,
// or absl::StatusOr<T>; the result type is absl::Status or absl::StatusOr<T> resp.
template <typename Fn>
auto TorchCall(absl::string_view what, Fn&& fn) {
  using R = std::invoke_result_t<Fn>;
  if constexpr (std::is_void_v<R>) {
    try {
      fn();
      return absl::OkStatus();
    } catch (...) {
      return StatusFromCurrentException(what);
    }
  } else if constexpr (std::is_same_v<R, absl::Status>) {
    try {
      return fn();
    } catch (...) {
      return StatusFromCurrentException(what);
    }
  } else {
    using Out = std::conditional_t<internal::IsStatusOr<R>::value, R, absl::StatusOr<R>>;
    try {
      return Out(fn());
    } catch (...) {
      return Out(StatusFromCurrentException(what));
    }
  }
}

}  // namespace oft

#endif  // OFT_SERVER_COMMON_TORCH_BOUNDARY_H_
