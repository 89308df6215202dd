// An oft_server child process for the load benchmarks (rpc_load, http_load): a temp data dir,
// the "default" base model, one API key, CPU devices, 127.0.0.1 ports read back from port
// files. The destructor sends SIGTERM, waits and removes the temp dir.
#ifndef OFT_BENCH_SPAWNED_SERVER_H_
#define OFT_BENCH_SPAWNED_SERVER_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace oft::bench {

struct SpawnOptions {
  std::string binary;                   // path to oft_server
  std::string model_dir = "models/default";
  std::string api_key;                  // registered for tenant "bench"
  std::string tag = "bench";            // temp dir name: /tmp/oft-<tag>-XXXXXX
  bool http = false;                    // also --http_listen=127.0.0.1:0
  std::vector<std::string> extra_args;  // appended
};

class SpawnedServer {
 public:
  // Starts the server and waits (120 s at most) for its ports. On failure `error` is set
  // and the object holds no process.
  SpawnedServer(const SpawnOptions& options, std::string* error);
  ~SpawnedServer();
  SpawnedServer(const SpawnedServer&) = delete;
  SpawnedServer& operator=(const SpawnedServer&) = delete;

  const std::string& grpc_address() const { return grpc_address_; }  // "127.0.0.1:PORT"
  int http_port() const { return http_port_; }                         // 0 without http
  pid_t pid() const { return pid_; }
  std::string log_path() const { return dir_ + "/server.log"; }

 private:
  std::string dir_;
  std::string grpc_address_;
  int http_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace oft::bench

#endif  // OFT_BENCH_SPAWNED_SERVER_H_
