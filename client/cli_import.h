// oftctl import-adapter DIR --name=N --base-model=B [--description=D]: publishes an adapter
// trained outside the server (e.g. by a multi-node job on a shared volume, deploy/README.md
// section 2b) as the next version of N through AdapterService.ImportAdapter.
// Exit codes as every subcommand (progress.h): 2 usage (a flag missing), 6 a local file
// missing or unreadable (no RPC made), 1 the server refused it (its error printed).
#ifndef OFT_CLIENT_CLI_IMPORT_H_
#define OFT_CLIENT_CLI_IMPORT_H_

#include <ostream>
#include <string>

#include "client/cli_args.h"
#include "client/oft_client.h"

namespace oft {

// Runs the subcommand with `client`; prints the new version (JSON with `json`) to `out`,
// errors to `err`. Returns the exit code.
int RunImportAdapter(Client& client, const std::string& dir, const Args& args, bool json,
                     std::ostream& out, std::ostream& err);

}  // namespace oft

#endif  // OFT_CLIENT_CLI_IMPORT_H_
