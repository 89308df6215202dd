#include "server/metrics/kernel_check_export.h"

namespace oft {

void ExportKernelSelfCheck(const KernelSelfCheckReport& report, ServiceMetrics& metrics) {
  for (const KernelCheckResult& r : report.results) {
    metrics.SetKernelSelfCheck(r.device, KernelName(r.kernel), r.dtype,
                               KernelCheckOutcomeName(r.outcome));
  }
  for (const KernelPathEntry& p : report.paths) {
    metrics.SetKernelPath(p.device, KernelName(p.kernel), KernelPathName(p.path));
  }
}

}  // namespace oft
