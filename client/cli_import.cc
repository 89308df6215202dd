#include "client/cli_import.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/progress.h"

namespace oft {

int RunImportAdapter(Client& client, const std::string& dir, const Args& args, bool json,
                     std::ostream& out, std::ostream& err) {
  v1::ImportAdapterMetadata metadata;
  metadata.set_name(args.Get("name"));
  metadata.set_base_model(args.Get("base-model"));
  metadata.set_description(args.Get("description"));
  if (metadata.name().empty() || metadata.base_model().empty()) {
    err << "oftctl: import-adapter needs --name=N and --base-model=B\n"
        << "Run 'oftctl --help' for usage.\n";
    return kExitUsage;
  }
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    const std::string path = (std::filesystem::path(dir) / file).string();
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      err << "oftctl: cannot read " << path << ": " << std::strerror(errno) << "\n";
      return kExitLocalFile;
    }
  }
  absl::StatusOr<v1::Adapter> adapter = client.ImportAdapter(dir, metadata);
  if (!adapter.ok()) {
    err << FormatCliError(adapter.status()) << "\n";
    return ExitCodeForStatus(adapter.status());
  }
  if (json) {
    out << ToJson(*adapter, true) << "\n";
    return kExitOk;
  }
  out << "imported " << adapter->ref().name() << ":" << adapter->ref().version() << " (base model "
      << adapter->base_model() << ")\n";
  return kExitOk;
}

}  // namespace oft
