#include "server/oft/ops_reference.h"

#include <vector>

#include "ATen/ATen.h"
#include "server/oft/ops.h"

namespace oft {

std::vector<double> internal::NeumannCoefficients(int64_t k) {
  // PEFT >= 0.18 (_cayley_batch): I; +2Q if k > 1; +2Q^2 if k > 2; +2Q^p for p = 3..k-2;
  // then the last power max(3, k-1) with coefficient 1.
  std::vector<double> c{1.0};
  if (k > 1) c.push_back(2.0);
  if (k > 2) {
    c.push_back(2.0);
    for (int64_t p = 3; p <= k - 2; ++p) c.push_back(2.0);
    const int64_t last = std::max<int64_t>(3, k - 1);
    c.resize(last + 1, 0.0);
    c[last] = 1.0;
  }
  return c;
}

namespace {

at::Tensor TriuIndices(int64_t b, const at::Device& device) {
  return at::triu_indices(b, b, 1, at::TensorOptions().dtype(at::kLong).device(device));
}

}  // namespace

at::Tensor SkewFromPacked(const at::Tensor& packed, int64_t b) {
  TORCH_CHECK(packed.dim() == 2, "packed skew parameters must be 2-D [rows, b(b-1)/2], got ",
              packed.sizes());
  TORCH_CHECK(packed.size(1) == b * (b - 1) / 2, "packed row length ", packed.size(1),
              " does not match block size ", b, " (expected ", b * (b - 1) / 2, ")");
  auto idx = TriuIndices(b, packed.device());
  auto u = at::zeros({packed.size(0), b, b}, packed.options());
  u.index_put_({at::indexing::Slice(), idx[0], idx[1]}, packed);
  return u - u.transpose(1, 2);
}

at::Tensor PackedFromSkew(const at::Tensor& skew) {
  TORCH_CHECK(skew.dim() == 3 && skew.size(1) == skew.size(2), "expected [rows, b, b], got ",
              skew.sizes());
  auto idx = TriuIndices(skew.size(1), skew.device());
  return skew.index({at::indexing::Slice(), idx[0], idx[1]});
}

at::Tensor DenseBlockDiagonal(const at::Tensor& rotation, int64_t num_blocks) {
  TORCH_CHECK(rotation.dim() == 3, "rotation must be [rows, b, b]");
  const int64_t rows = rotation.size(0), b = rotation.size(1);
  TORCH_CHECK(rows == 1 || rows == num_blocks, "rotation has ", rows, " blocks, expected 1 or ",
              num_blocks);
  auto dense = at::zeros({num_blocks * b, num_blocks * b}, rotation.options());
  for (int64_t i = 0; i < num_blocks; ++i) {
    dense.narrow(0, i * b, b).narrow(1, i * b, b).copy_(rotation[rows == 1 ? 0 : i]);
  }
  return dense;
}

namespace reference {

void CheckBuildRotationArgs(const at::Tensor& packed, int64_t b, int64_t num_terms) {
  TORCH_CHECK(b >= 2, "block_size must be >= 2, got ", b);
  TORCH_CHECK(num_terms >= 1, "num_terms must be >= 1, got ", num_terms);
  TORCH_CHECK(packed.dim() == 2 && packed.size(1) == b * (b - 1) / 2,
              "packed must be [rows, ", b * (b - 1) / 2, "] for block size ", b, ", got ",
              packed.sizes());
  TORCH_CHECK(at::isFloatingType(packed.scalar_type()), "packed must be floating point");
}

int64_t CheckBlockRotateArgs(const at::Tensor& x, const at::Tensor& rotation) {
  TORCH_CHECK(x.dim() >= 1, "x must have at least one dimension");
  TORCH_CHECK(rotation.dim() == 3 && rotation.size(1) == rotation.size(2),
              "rotation must be [rows, b, b], got ", rotation.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()) && at::isFloatingType(rotation.scalar_type()),
              "block_rotate needs floating point inputs");
  TORCH_CHECK(x.device() == rotation.device(), "x is on ", x.device(), " but rotation is on ",
              rotation.device());
  const int64_t d = x.size(-1), rows = rotation.size(0), b = rotation.size(1);
  TORCH_CHECK(b > 0 && d % b == 0, "last dim of x (", d, ") is not a multiple of block size ", b);
  TORCH_CHECK(rows == 1 || rows * b == d, "rotation has ", rows, " blocks of ", b,
              " but x has width ", d);
  return d / b;
}

int64_t CheckGatheredBlockRotateArgs(const at::Tensor& x, const at::Tensor& rotations,
                                     const at::Tensor& index) {
  TORCH_CHECK(x.dim() == 2, "gathered_block_rotate: x must be [tokens, d], got ", x.sizes());
  TORCH_CHECK(rotations.dim() == 4 && rotations.size(2) == rotations.size(3),
              "gathered_block_rotate: rotations must be [adapters, rows, b, b], got ",
              rotations.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()) && at::isFloatingType(rotations.scalar_type()),
              "gathered_block_rotate needs floating point x and rotations");
  TORCH_CHECK(index.dim() == 1 && index.size(0) == x.size(0),
              "gathered_block_rotate: index must be [", x.size(0), "], got ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong, "gathered_block_rotate: index must be int64");
  TORCH_CHECK(x.device() == rotations.device() && x.device() == index.device(),
              "gathered_block_rotate: x (", x.device(), "), rotations (", rotations.device(),
              ") and index (", index.device(), ") must be on one device");
  const int64_t d = x.size(1), rows = rotations.size(1), b = rotations.size(2);
  TORCH_CHECK(b > 0 && d % b == 0, "last dim of x (", d, ") is not a multiple of block size ", b);
  TORCH_CHECK(rows == 1 || rows * b == d, "rotations have ", rows, " blocks of ", b,
              " but x has width ", d);
  return d / b;
}

at::Tensor GatheredBlockRotateForward(const at::Tensor& x, const at::Tensor& rotations_in,
                                      const at::Tensor& index, bool delta) {
  CheckGatheredBlockRotateArgs(x, rotations_in, index);
  const at::Tensor rotations =
      delta ? rotations_in.to(AccumulationType(x.scalar_type())) +
                  at::eye(rotations_in.size(2), rotations_in.options().dtype(
                                                    AccumulationType(x.scalar_type())))
            : rotations_in;
  if (x.size(0) > 0) {
    TORCH_CHECK(index.min().item<int64_t>() >= -1 &&
                    index.max().item<int64_t>() < rotations.size(0),
                "gathered_block_rotate: index values must be in [-1, ", rotations.size(0), ")");
  }
  at::Tensor y = x.clone();  // rows with index -1 pass through
  for (int64_t a = 0; a < rotations.size(0); ++a) {
    const at::Tensor rows = (index == a).nonzero().view({-1});
    if (rows.numel() == 0) continue;
    y.index_copy_(0, rows, BlockRotateForward(x.index_select(0, rows), rotations[a]));
  }
  return y;
}

at::Tensor BuildRotationForward(const at::Tensor& packed, int64_t b, int64_t num_terms,
                                bool use_cayley_neumann) {
  CheckBuildRotationArgs(packed, b, num_terms);
  const auto q = SkewFromPacked(packed, b);                      // [rows, b, b]
  const auto eye = at::eye(b, packed.options()).expand_as(q);
  if (!use_cayley_neumann) {
    // PEFT's exact path: solve X (I + Q) = I - Q.
    return at::linalg_solve(eye + q, eye - q, /*left=*/false);
  }
  const auto c = internal::NeumannCoefficients(num_terms);
  auto r = eye.clone();
  at::Tensor power;
  for (size_t p = 1; p < c.size(); ++p) {
    power = p == 1 ? q : at::bmm(power, q);
    if (c[p] != 0.0) r.add_(power, c[p]);
  }
  return r;
}

at::Tensor BuildRotationBackward(const at::Tensor& grad, const at::Tensor& packed,
                                 const at::Tensor& rotation, int64_t b, int64_t num_terms,
                                 bool use_cayley_neumann) {
  CheckBuildRotationArgs(packed, b, num_terms);
  const auto q = SkewFromPacked(packed, b);
  const auto g = grad.to(packed.scalar_type());
  const auto eye = at::eye(b, packed.options()).expand_as(q);
  at::Tensor gq;  // dL/dQ, treating Q's entries as independent
  if (!use_cayley_neumann) {
    // R = (I - Q) A^{-1}, A = I + Q  =>  dL/dQ = -(I + R)^T G A^{-T}.
    const auto x = at::linalg_solve((eye + q).transpose(1, 2), g, /*left=*/false);
    gq = -at::bmm((eye + rotation.to(packed.scalar_type())).transpose(1, 2), x);
  } else {
    // R = sum_p c_p Q^p  =>  dL/dQ = sum_p c_p sum_{j<p} (Q^j)^T G (Q^{p-1-j})^T.
    // Grouped as sum_j (Q^j)^T G A_j with A_j = sum_{s>=0} c_{j+1+s} (Q^s)^T.
    const auto c = internal::NeumannCoefficients(num_terms);
    const int64_t m = static_cast<int64_t>(c.size()) - 1;  // polynomial degree
    gq = at::zeros_like(q);
    if (m >= 1) {
      std::vector<at::Tensor> pt{eye.contiguous()};        // (Q^s)^T
      const auto qt = q.transpose(1, 2);
      for (int64_t s = 1; s < m; ++s) pt.push_back(at::bmm(pt.back(), qt));
      for (int64_t j = 0; j < m; ++j) {
        auto a = at::zeros_like(q);
        for (int64_t s = 0; j + 1 + s <= m; ++s) {
          if (c[j + 1 + s] != 0.0) a.add_(pt[s], c[j + 1 + s]);
        }
        // (Q^j)^T = pt[j]
        gq.add_(at::bmm(at::bmm(pt[j], g), a));
      }
    }
  }
  return PackedFromSkew(gq - gq.transpose(1, 2));
}

at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation) {
  const int64_t r = CheckBlockRotateArgs(x, rotation);
  const int64_t d = x.size(-1), b = rotation.size(1);
  const auto acc = AccumulationType(x.scalar_type());
  const auto xf = x.reshape({-1, d}).to(acc);
  const auto rf = rotation.to(acc);
  const int64_t t = xf.size(0);
  at::Tensor y;
  if (rotation.size(0) == 1) {
    y = xf.view({t * r, b}).mm(rf[0]);
  } else {
    y = at::bmm(xf.view({t, r, b}).transpose(0, 1), rf).transpose(0, 1);
  }
  return y.reshape(x.sizes()).to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> BlockRotateBackward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& rotation, bool need_x,
                                                       bool need_rotation) {
  const int64_t r = CheckBlockRotateArgs(x, rotation);
  const int64_t d = x.size(-1), b = rotation.size(1);
  const auto acc = AccumulationType(x.scalar_type());
  const auto gf = grad.reshape({-1, d}).to(acc);
  const int64_t t = gf.size(0);
  const bool shared = rotation.size(0) == 1;
  at::Tensor gx, gr;
  if (need_x) {
    const auto rf = rotation.to(acc);
    if (shared) {
      gx = gf.view({t * r, b}).mm(rf[0].t());
    } else {
      gx = at::bmm(gf.view({t, r, b}).transpose(0, 1), rf.transpose(1, 2)).transpose(0, 1);
    }
    gx = gx.reshape(x.sizes()).to(x.scalar_type());
  }
  if (need_rotation) {
    const auto xf = x.reshape({-1, d}).to(acc);
    if (shared) {
      gr = xf.view({t * r, b}).t().mm(gf.view({t * r, b})).unsqueeze(0);
    } else {
      gr = at::bmm(xf.view({t, r, b}).permute({1, 2, 0}), gf.view({t, r, b}).transpose(0, 1));
    }
    gr = gr.to(rotation.scalar_type());
  }
  return {gx, gr};
}

}  // namespace reference
}  // namespace oft
