// Status propagation macros. The Debian Abseil (20220623) ships no status macros,
// so the project defines them once here.
#ifndef OFT_SERVER_COMMON_STATUS_MACROS_H_
#define OFT_SERVER_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define OFT_INTERNAL_CONCAT_IMPL(a, b) a##b
#define OFT_INTERNAL_CONCAT(a, b) OFT_INTERNAL_CONCAT_IMPL(a, b)

// Returns the status of `expr` from the current function when it is not OK.
#define OFT_RETURN_IF_ERROR(expr)                                   \
  do {                                                              \
    ::absl::Status oft_status_ = (expr);                            \
    if (!oft_status_.ok()) return oft_status_;                      \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, otherwise
// moves the value into `lhs` (which may be a declaration such as `auto x`).
#define OFT_ASSIGN_OR_RETURN(lhs, rexpr) \
  OFT_INTERNAL_ASSIGN_OR_RETURN(OFT_INTERNAL_CONCAT(oft_statusor_, __LINE__), lhs, rexpr)

#define OFT_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();        \
  lhs = std::move(tmp).value()

#endif  // OFT_SERVER_COMMON_STATUS_MACROS_H_
