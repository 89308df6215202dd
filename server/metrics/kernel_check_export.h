// Exports a kernel self-check report (server/oft/self_check.h) as the service's metrics:
// oft_kernel_self_check{device,kernel,dtype,result} and oft_kernel_path{device,kernel,path}.
#ifndef OFT_SERVER_METRICS_KERNEL_CHECK_EXPORT_H_
#define OFT_SERVER_METRICS_KERNEL_CHECK_EXPORT_H_

#include "server/metrics/metrics.h"
#include "server/oft/self_check.h"

namespace oft {

void ExportKernelSelfCheck(const KernelSelfCheckReport& report, ServiceMetrics& metrics);

}  // namespace oft

#endif  // OFT_SERVER_METRICS_KERNEL_CHECK_EXPORT_H_
