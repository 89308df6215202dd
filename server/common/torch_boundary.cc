#include "server/common/torch_boundary.h"

#include <new>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "c10/util/Exception.h"

namespace oft {
namespace {

// c10 messages carry a C++ backtrace after the first line; users need only the first.
std::string FirstLine(const char* msg) {
  std::string s(msg == nullptr ? "" : msg);
  if (auto pos = s.find("\nException raised from"); pos != std::string::npos) s.resize(pos);
  return s;
}

// Device allocation failures that do not come from the caching allocator (and so are not
// c10::OutOfMemoryError): cuBLAS workspace/handle allocation, cudaMalloc in a library,
// cudaErrorMemoryAllocation surfacing at a launch or sync.
bool IsDeviceAllocationFailure(const std::string& msg) {
  for (const char* marker : {"CUBLAS_STATUS_ALLOC_FAILED", "CUDA error: out of memory",
                             "cudaErrorMemoryAllocation", "CUSOLVER_STATUS_ALLOC_FAILED"}) {
    if (msg.find(marker) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

absl::Status StatusFromCurrentException(absl::string_view what) {
  try {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory: ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::ValueError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::IndexError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::TypeError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::LinAlgError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::Error& e) {
    const std::string msg = FirstLine(e.what_without_backtrace());
    if (IsDeviceAllocationFailure(msg)) {
      return absl::ResourceExhaustedError(absl::StrCat(what, ": out of device memory: ", msg));
    }
    return absl::InternalError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of host memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

}  // namespace oft
