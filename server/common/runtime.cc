#include "server/common/runtime.h"

#include <thread>

#include "ATen/Context.h"
#include "ATen/Parallel.h"

namespace oft {

int ConfigureCpuRuntime(int threads) {
  at::globalContext().setFlushDenormal(true);
  const int n = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(n > 0 ? n : 1);
  return at::get_num_threads();
}

}  // namespace oft
