// Statistics of benchmark timings: every benchmark reports medians and percentiles, computed
// one way.
#ifndef OFT_BENCH_STATS_H_
#define OFT_BENCH_STATS_H_

#include <algorithm>
#include <vector>

namespace oft::bench {

// The median of `v` (the mean of the two middle values for an even count); 0 when empty.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The p-quantile (0 <= p <= 1, nearest rank) of `v`, reordering it; 0 when empty.
template <typename T>
double Percentile(std::vector<T>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

}  // namespace oft::bench

#endif  // OFT_BENCH_STATS_H_
