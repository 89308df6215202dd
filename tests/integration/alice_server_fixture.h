// A gtest fixture: a fresh oft_server on a temp data dir with alice's API key, a client for
// alice, and the first 64 sample training rows uploaded as `dataset_id_`.
#ifndef OFT_TESTS_INTEGRATION_ALICE_SERVER_FIXTURE_H_
#define OFT_TESTS_INTEGRATION_ALICE_SERVER_FIXTURE_H_

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {

class AliceServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(
        ServerProcessOptions{.data_dir = dir_.Sub("data"), .api_keys = {AliceFlag()}});
    ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
    client_ = server_->NewClient(kAliceKey);
    absl::StatusOr<v1::Dataset> ds = client_->UploadDatasetBytes(SampleTrainHead(64), "train");
    ASSERT_TRUE(ds.ok()) << ds.status();
    dataset_id_ = ds->id();
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
  std::string dataset_id_;
};

}  // namespace oft::testing

#endif  // OFT_TESTS_INTEGRATION_ALICE_SERVER_FIXTURE_H_
