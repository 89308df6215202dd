#include "server/jobs/dataset_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"
#include "server/jobs/store_db.h"

namespace oft {
namespace {

constexpr const char* kDatasetColumns =
    "SELECT id, tenant, name, sha256, size_bytes, rows, blank_lines, format, path, created_at, "
    "seq FROM datasets ";
constexpr int kDatasetSeqColumn = 10;

DatasetRecord ReadDatasetRow(const SqlStatement& s) {
  DatasetRecord d;
  d.id = s.Text(0);
  d.tenant = s.Text(1);
  d.name = s.Text(2);
  d.sha256 = s.Text(3);
  d.size_bytes = s.Int(4);
  d.rows = s.Int(5);
  d.blank_lines = s.Int(6);
  d.format = s.Text(7);
  d.path = s.Text(8);
  d.created_at = s.Time(9);
  return d;
}

bool IsLowerHex(absl::string_view s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

DatasetStore::DatasetStore(std::shared_ptr<SqliteDb> db, std::function<absl::Time()> clock)
    : db_(std::move(db)), clock_(std::move(clock)) {}

absl::StatusOr<DatasetRecord> DatasetStore::CreateDataset(const NewDataset& d) {
  OFT_RETURN_IF_ERROR(CheckTenant(d.tenant));
  OFT_RETURN_IF_ERROR(ValidateName("name", d.name));
  if (!IsLowerHex(d.sha256, 64)) {
    return absl::InvalidArgumentError(absl::StrCat("sha256 must be 64 lowercase hex digits, got \"",
                                                   d.sha256.substr(0, 80), "\""));
  }
  if (d.size_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("size_bytes must be > 0, got ", d.size_bytes));
  }
  if (d.rows < 0)
    return absl::InvalidArgumentError(absl::StrCat("rows must be >= 0, got ", d.rows));
  if (d.blank_lines < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("blank_lines must be >= 0, got ", d.blank_lines));
  }
  if (d.format.empty()) return absl::InvalidArgumentError("format must not be empty");
  if (d.path.empty()) return absl::InvalidArgumentError("path must not be empty");

  DatasetRecord out;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    out = {txn.NewId("ds"), d.tenant,      d.name,   d.sha256, d.size_bytes,
           d.rows,          d.blank_lines, d.format, d.path,   Now()};
    OFT_ASSIGN_OR_RETURN(SqlStatement ins, txn.Prepare(R"sql(
        INSERT INTO datasets (id, tenant, name, sha256, size_bytes, rows, blank_lines, format,
                              path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?))sql"));
    return ins.Bind(1, out.id)
        .Bind(2, out.tenant)
        .Bind(3, out.name)
        .Bind(4, out.sha256)
        .Bind(5, out.size_bytes)
        .Bind(6, out.rows)
        .Bind(7, out.blank_lines)
        .Bind(8, out.format)
        .Bind(9, out.path)
        .Bind(10, absl::ToUnixMicros(out.created_at))
        .Run();
  }));
  // Round to the stored precision so the result equals what GetDataset returns.
  out.created_at = absl::FromUnixMicros(absl::ToUnixMicros(out.created_at));
  return out;
}

absl::StatusOr<DatasetRecord> DatasetStore::GetDataset(const std::string& tenant,
                                                       const std::string& id) const {
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                       lease.Prepare(absl::StrCat(kDatasetColumns, "WHERE id = ? AND tenant = ?")));
  s.Bind(1, id).Bind(2, tenant);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", id, "\" not found"));
  return ReadDatasetRow(s);
}

absl::StatusOr<std::string> DatasetStore::PageTokenAfter(const std::string& tenant, const std::string& id,
                                                         absl::string_view field) const {
  return PageToken("datasets", tenant, "").After(*db_, "datasets", tenant, id, field);
}

absl::StatusOr<DatasetPage> DatasetStore::ListDatasets(const std::string& tenant, int page_size,
                                                       const std::string& page_token) const {
  OFT_ASSIGN_OR_RETURN(const int limit, EffectivePageSize(page_size));
  const PageToken tokens("datasets", tenant, "");
  OFT_ASSIGN_OR_RETURN(const int64_t below, tokens.Decode(page_token));
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s, lease.Prepare(absl::StrCat(kDatasetColumns,
                                                                  "WHERE tenant = ? AND seq < ? "
                                                                  "ORDER BY seq DESC LIMIT ?")));
  s.Bind(1, tenant).Bind(2, below).Bind(3, limit + 1);
  DatasetPage page;
  int64_t last_seq = 0;
  while (true) {
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (static_cast<int>(page.datasets.size()) == limit) {
      page.next_page_token = tokens.Encode(last_seq);
      break;
    }
    page.datasets.push_back(ReadDatasetRow(s));
    last_seq = s.Int(kDatasetSeqColumn);
  }
  return page;
}

absl::StatusOr<DeletedDataset> DatasetStore::DeleteDataset(const std::string& tenant,
                                                           const std::string& id) {
  DeletedDataset out;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare(absl::StrCat(
                                               kDatasetColumns, "WHERE id = ? AND tenant = ?")));
      s.Bind(1, id).Bind(2, tenant);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", id, "\" not found"));
      out.record = ReadDatasetRow(s);
    }
    {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare(R"sql(
          SELECT j.id, j.state FROM job_datasets d JOIN jobs j ON j.id = d.job_id
          WHERE d.dataset_id = ? AND j.state IN ('QUEUED', 'RUNNING') ORDER BY j.seq LIMIT 1)sql"));
      s.Bind(1, id);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) {
        return absl::FailedPreconditionError(
            absl::StrCat("dataset \"", id, "\" is used by job \"", s.Text(0), "\" (", s.Text(1),
                         "); cancel the job or wait until it ends"));
      }
    }
    OFT_ASSIGN_OR_RETURN(SqlStatement del, txn.Prepare("DELETE FROM datasets WHERE id = ?"));
    OFT_RETURN_IF_ERROR(del.Bind(1, id).Run());
    OFT_ASSIGN_OR_RETURN(SqlStatement refs, txn.Prepare("SELECT 1 FROM datasets WHERE path = ? "
                                                        "LIMIT 1"));
    refs.Bind(1, out.record.path);
    OFT_ASSIGN_OR_RETURN(out.path_still_referenced, refs.Step());
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace oft
