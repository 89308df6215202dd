// TLS and mutual TLS with certificates made by the openssl CLI in the test's temp dir: a CA,
// a server certificate for 127.0.0.1 / localhost, a client certificate, and a client
// certificate of an unrelated CA.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(MakeCa("ca"));
    ASSERT_NO_FATAL_FAILURE(MakeCa("rogue-ca"));
    ASSERT_NO_FATAL_FAILURE(
        MakeCert("server", "ca", "localhost",
                 "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"));
    ASSERT_NO_FATAL_FAILURE(
        MakeCert("client", "ca", "oft-client", "extendedKeyUsage=clientAuth\n"));
    ASSERT_NO_FATAL_FAILURE(
        MakeCert("rogue-client", "rogue-ca", "oft-client", "extendedKeyUsage=clientAuth\n"));
  }

  void OpenSsl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = RunCommand(argv);
    ASSERT_EQ(r.exit_code, 0) << "openssl " << args[0] << ": " << r.err;
  }
  std::string Pem(const std::string& name) { return dir_.Sub(name + ".pem"); }
  std::string Key(const std::string& name) { return dir_.Sub(name + ".key"); }

  void MakeCa(const std::string& name) {
    OpenSsl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", Key(name), "-out", Pem(name), "-days", "2", "-subj", "/CN=" + name});
  }
  void MakeCert(const std::string& name, const std::string& ca, const std::string& cn,
                const std::string& extensions) {
    const std::string csr = dir_.Sub(name + ".csr"), ext = dir_.Sub(name + ".ext");
    {
      FILE* f = std::fopen(ext.c_str(), "w");
      ASSERT_NE(f, nullptr);
      std::fputs(("basicConstraints=CA:FALSE\n" + extensions).c_str(), f);
      std::fclose(f);
    }
    OpenSsl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", Key(name), "-out", csr, "-subj", "/CN=" + cn});
    OpenSsl({"x509", "-req", "-in", csr, "-CA", Pem(ca), "-CAkey", Key(ca), "-CAcreateserial",
             "-out", Pem(name), "-days", "2", "-extfile", ext});
  }

  void StartServer(bool mutual) {
    std::vector<std::string> flags = {"--tls_cert=" + Pem("server"), "--tls_key=" + Key("server")};
    if (mutual) flags.push_back("--tls_client_ca=" + Pem("ca"));
    server_ = std::make_unique<ServerProcess>(
        ServerProcessOptions{.data_dir = dir_.Sub(mutual ? "data-mtls" : "data-tls"),
                             .api_keys = {AliceFlag()},
                             .extra_flags = flags});
    ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  }

  // ListBaseModels through a client with these TLS settings.
  absl::Status Call(bool tls, const std::string& ca, const std::string& client_cert,
                    const std::string& api_key = kAliceKey) {
    ClientOptions o;
    o.tls = tls;
    o.ca_cert_file = ca;
    if (!client_cert.empty()) {
      o.client_cert_file = Pem(client_cert);
      o.client_key_file = Key(client_cert);
    }
    o.deadline = absl::Seconds(10);
    std::unique_ptr<Client> client = server_->NewClient(api_key, o);
    if (client == nullptr) return absl::InternalError("no client");
    return client->ListBaseModels().status();
  }

  CommandResult Oftctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {OftctlBinary(), "--server=" + server_->address(),
                                     std::string("--api-key=") + kAliceKey, "--deadline=10"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(TlsTest, ServerTls) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/false));
  absl::Status st = Call(true, Pem("ca"), "");
  EXPECT_TRUE(st.ok()) << st;
  // The API key is still required over TLS.
  EXPECT_EQ(Call(true, Pem("ca"), "", "").code(), absl::StatusCode::kUnauthenticated);
  // A client that does not trust the CA, and a plaintext client, get nowhere.
  EXPECT_EQ(Call(true, Pem("rogue-ca"), "").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call(false, "", "").code(), absl::StatusCode::kUnavailable);

  CommandResult r = Oftctl({"--tls", "--ca-cert=" + Pem("ca"), "models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("default"));
  r = Oftctl({"models"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(TlsTest, MutualTls) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/true));
  // A client certificate signed by the CA is required.
  absl::Status st = Call(true, Pem("ca"), "client");
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(Call(true, Pem("ca"), "").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call(true, Pem("ca"), "rogue-client").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call(false, "", "").code(), absl::StatusCode::kUnavailable);
  // A certificate does not replace the API key.
  EXPECT_EQ(Call(true, Pem("ca"), "client", "").code(), absl::StatusCode::kUnauthenticated);

  CommandResult r = Oftctl({"--tls", "--ca-cert=" + Pem("ca"), "--client-cert=" + Pem("client"),
                            "--client-key=" + Key("client"), "models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("default"));
  r = Oftctl({"--tls", "--ca-cert=" + Pem("ca"), "models"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

}  // namespace
}  // namespace oft::testing
