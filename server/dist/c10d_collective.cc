#include "server/dist/c10d_collective.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"
#include "server/dist/agreement.h"
#include "torch/csrc/distributed/c10d/PrefixStore.hpp"
#include "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"
#include "torch/csrc/distributed/c10d/TCPStore.hpp"
#ifdef OFT_DIST_NCCL
#include "c10/cuda/CUDAFunctions.h"
#include "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp"
#endif

namespace oft {
namespace {

// c10d reports failures by throwing; this is where they become Status (the
// store's and gloo's timeouts, broken connections, everything else).
template <typename Fn>
absl::Status DistCall(absl::string_view what, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const c10::DistStoreError& e) {
    return absl::DeadlineExceededError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const c10::DistNetworkError& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    const std::string m = e.what_without_backtrace();
    if (absl::StrContains(m, "imed out") || absl::StrContains(m, "imeout")) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": ", m));
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", m));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
  }
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || absl::StartsWith(host, "127.") || host == "::1";
}

class C10dCollective final : public Collective {
 public:
  C10dCollective(const LaunchEnv& env, const C10dOptions& options)
      : env_(env), options_(options) {}

  absl::Status Connect() {
    OFT_RETURN_IF_ERROR(DistCall("connecting to the TCPStore", [&] {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(env_.master_port);
      so.isServer = !env_.use_agent_store && env_.rank == 0;
      so.numWorkers = std::nullopt;  // the agreement below, not the store, counts ranks
      so.waitWorkers = false;
      so.timeout = options_.timeout;
      auto tcp = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so);
      store_ = c10::make_intrusive<c10d::PrefixStore>(
          absl::StrCat("oft/attempt_", env_.restart_count), tcp);
    }));
    nlohmann::json launch;
    launch["world_size"] = env_.world_size;
    launch["backend"] = options_.cuda_device >= 0 ? "nccl" : "gloo";
    OFT_RETURN_IF_ERROR(CheckAgreement("the launch", launch.dump()));
#ifdef OFT_DIST_NCCL
    if (options_.cuda_device >= 0) {
      return DistCall("creating the NCCL process group", [&] {
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(options_.cuda_device));
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = options_.timeout;
        auto pg_store = c10::make_intrusive<c10d::PrefixStore>("nccl", store_);
        group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, env_.rank, env_.world_size,
                                                             opts);
      });
    }
#endif
    return DistCall("creating the Gloo process group", [&] {
      auto opts = c10d::ProcessGroupGloo::Options::create_default(options_.timeout);
      opts->devices.clear();
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (IsLoopback(env_.master_addr)) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      auto pg_store = c10::make_intrusive<c10d::PrefixStore>("gloo", store_);
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, env_.rank, env_.world_size,
                                                           opts);
    });
  }

  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }

  absl::Status AllReduceSum(at::Tensor& t) override {
    if (!t.is_contiguous()) {
      return absl::InvalidArgumentError("AllReduceSum needs a contiguous tensor");
    }
    return DistCall(absl::StrCat("rank ", env_.rank, ": all-reduce of ", t.numel(), " ",
                                 c10::toString(t.scalar_type()), " values failed (a peer died, "
                                 "hung past the ", options_.timeout.count() / 1000.0,
                                 " s timeout, or left the group)"),
                    [&] {
                      // NCCL reduces device tensors only: a host tensor travels through the
                      // rank's device and back.
                      const bool staged = options_.cuda_device >= 0 && !t.is_cuda();
                      std::vector<at::Tensor> ts{
                          staged ? t.to(c10::Device(c10::kCUDA,
                                                    static_cast<c10::DeviceIndex>(options_.cuda_device)))
                                 : t};
                      c10d::AllreduceOptions o;
                      o.reduceOp = c10d::ReduceOp::SUM;
                      o.timeout = options_.timeout;
                      auto work = group_->allreduce(ts, o);
                      work->wait(options_.timeout);
                      if (staged) t.copy_(ts[0]);
                    });
  }

  absl::Status CheckAgreement(absl::string_view what, const std::string& identity) override {
    const std::string prefix = absl::StrCat("agree/", seq_++, "/");
    std::vector<std::string> all(env_.world_size);
    const std::string wait_msg = absl::StrCat(
        "rank ", env_.rank, ": waiting for the other ranks to check ", what,
        " (a rank did not start, or was launched with another WORLD_SIZE/MASTER_PORT) for ",
        options_.timeout.count() / 1000.0, " s");
    auto get = [&](int r) {
      std::vector<uint8_t> v = store_->get(absl::StrCat(prefix, r));
      all[r].assign(v.begin(), v.end());
    };
    OFT_RETURN_IF_ERROR(DistCall(wait_msg, [&] {
      store_->set(absl::StrCat(prefix, env_.rank),
                  std::vector<uint8_t>(identity.begin(), identity.end()));
      get(0);
    }));
    all[env_.rank] = identity;
    // Against rank 0 first: a rank with another world size stops here, before it waits for
    // ranks that do not exist.
    if (absl::Status st = CompareIdentities(what, {all[0], identity}); !st.ok()) {
      return Finish(prefix, st);
    }
    OFT_RETURN_IF_ERROR(DistCall(wait_msg, [&] {
      for (int r = 1; r < env_.world_size; ++r) {
        if (r != env_.rank) get(r);
      }
    }));
    // Every rank compares the same list, so every rank reaches the same verdict.
    return Finish(prefix, CompareIdentities(what, all));
  }

 private:
  // Ends an agreement with `verdict`. Each rank counts itself done; on a disagreement the
  // rank hosting the store waits (a few seconds at most) until every rank is done reading,
  // so that the others see the disagreement rather than a store that went away.
  absl::Status Finish(const std::string& prefix, absl::Status verdict) {
    const std::string key = absl::StrCat(prefix, "done");
    (void)DistCall("agreement", [&] { store_->add(key, 1); });
    if (!verdict.ok() && env_.rank == 0 && !env_.use_agent_store) {
      const auto until = std::chrono::steady_clock::now() +
                         std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::seconds(10));
      int64_t done = 0;
      while (done < env_.world_size && std::chrono::steady_clock::now() < until) {
        if (!DistCall("agreement", [&] { done = store_->add(key, 0); }).ok()) break;
        if (done < env_.world_size) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    return Describe(std::move(verdict));
  }

  absl::Status Describe(absl::Status st) const {
    if (st.ok()) return st;
    return absl::Status(st.code(), absl::StrCat("rank ", env_.rank, ": ", st.message()));
  }

  const LaunchEnv env_;
  const C10dOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> group_;  // ProcessGroupGloo or ProcessGroupNCCL
  int64_t seq_ = 0;
};

}  // namespace

bool C10dHasNccl() {
#ifdef OFT_DIST_NCCL
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Collective>> ConnectC10d(const LaunchEnv& env,
                                                        const C10dOptions& options) {
  if (options.cuda_device >= 0 && !C10dHasNccl()) {
    return absl::InvalidArgumentError(
        "a CUDA rank needs ProcessGroupNCCL, which this build lacks (a CUDA build with nccl.h)");
  }
  if (options.timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the c10d timeout must be positive, got ", options.timeout.count(), " ms"));
  }
  auto c = std::make_unique<C10dCollective>(env, options);
  OFT_RETURN_IF_ERROR(c->Connect());
  return std::unique_ptr<Collective>(std::move(c));
}

}  // namespace oft
