// Fused glue for the decode step in reduced precision: each call replaces several small PyTorch ops whose
// dispatch, not arithmetic, is what they cost at one or a few rows. Every row is computed by the same loop
// whatever the number of rows, so verifying a draft gives each row the bits plain decoding gives it.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <cmath>

namespace {

template <typename T>
inline float as_float(T v) { return static_cast<float>(v); }

// x[r] += delta[r] (when given); out[r] = x[r] / rms(x[r]) * w, rounded to bfloat16.
template <typename D>
void add_rms_norm_rows(float* x, const D* delta, const float* w, c10::BFloat16* out, int64_t rows, int64_t d,
                       float eps) {
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * d;
      if (delta != nullptr)
        for (int64_t j = 0; j < d; ++j) xr[j] += as_float(delta[r * d + j]);
      float ss = 0.f;
      for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
      for (int64_t j = 0; j < d; ++j) out[r * d + j] = c10::BFloat16(xr[j] * inv * w[j]);
    }
  });
}

}  // namespace

// x [T, D] float32 (the residual stream, updated in place), delta [T, D] bf16 or float32 or None,
// w [D] float32 -> [T, D] bfloat16.
torch::Tensor add_rms_norm(torch::Tensor x, c10::optional<torch::Tensor> delta, torch::Tensor w, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.dim() == 2, "add_rms_norm: x");
  TORCH_CHECK(w.scalar_type() == torch::kFloat32 && w.numel() == x.size(1), "add_rms_norm: w");
  const int64_t rows = x.size(0), d = x.size(1);
  auto out = torch::empty({rows, d}, x.options().dtype(torch::kBFloat16));
  auto wc = w.contiguous();
  auto* op = out.data_ptr<c10::BFloat16>();
  if (!delta.has_value()) {
    add_rms_norm_rows<float>(x.data_ptr<float>(), nullptr, wc.data_ptr<float>(), op, rows, d, eps);
  } else {
    auto dc = delta->contiguous().view({rows, d});
    if (dc.scalar_type() == torch::kBFloat16)
      add_rms_norm_rows(x.data_ptr<float>(), dc.data_ptr<c10::BFloat16>(), wc.data_ptr<float>(), op, rows, d, eps);
    else
      add_rms_norm_rows(x.data_ptr<float>(), dc.to(torch::kFloat32).data_ptr<float>(), wc.data_ptr<float>(), op,
                        rows, d, eps);
  }
  return out;
}

// gate_up [T, 2F] bfloat16 -> silu(gate) * up [T, F] bfloat16, computed in float32.
torch::Tensor silu_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.scalar_type() == torch::kBFloat16 && gate_up.dim() == 2, "silu_mul: [T, 2F] bf16");
  auto gu = gate_up.contiguous();
  const int64_t rows = gu.size(0), f = gu.size(1) / 2;
  auto out = torch::empty({rows, f}, gu.options());
  const auto* in = gu.data_ptr<c10::BFloat16>();
  auto* o = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < f; ++j) {
        const float g = static_cast<float>(in[r * 2 * f + j]), u = static_cast<float>(in[r * 2 * f + f + j]);
        o[r * f + j] = c10::BFloat16(g / (1.f + std::exp(-g)) * u);
      }
  });
  return out;
}

// qkv [T, (H + 2 Hkv) * D] bf16 for the tokens at cache slots start..start+T: rotates q and k (rotate-half
// RoPE, cos/sin [T, D] float32), stores k and v into the float32 caches [1, Hkv, S, D], and returns q
// float32 [Hkv, g * T, D] with row gi * T + t holding head kv * g + gi of token t (grouped-query layout).
torch::Tensor rope_store(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor k_cache,
                         torch::Tensor v_cache, int64_t start, int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.scalar_type() == torch::kBFloat16 && qkv.dim() == 2, "rope_store: qkv [T, (H+2Hkv)*D] bf16");
  TORCH_CHECK(k_cache.scalar_type() == torch::kFloat32 && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "rope_store: float32 contiguous caches");
  const int64_t t_rows = qkv.size(0), d = cos.size(1), half = d / 2, g = heads / kv_heads;
  const int64_t slots = k_cache.size(2);
  TORCH_CHECK(qkv.size(1) == (heads + 2 * kv_heads) * d && start + t_rows <= slots, "rope_store: shapes");
  auto in = qkv.contiguous();
  auto c = cos.to(torch::kFloat32).contiguous(), s = sin.to(torch::kFloat32).contiguous();
  auto q = torch::empty({kv_heads, g * t_rows, d}, k_cache.options());
  const auto* src = in.data_ptr<c10::BFloat16>();
  const float *cp = c.data_ptr<float>(), *sp = s.data_ptr<float>();
  float *qp = q.data_ptr<float>(), *kp = k_cache.data_ptr<float>(), *vp = v_cache.data_ptr<float>();
  const int64_t width = (heads + 2 * kv_heads) * d;
  for (int64_t t = 0; t < t_rows; ++t) {
    const float *ct = cp + t * d, *st = sp + t * d;
    for (int64_t h = 0; h < heads + 2 * kv_heads; ++h) {
      const c10::BFloat16* x = src + t * width + h * d;
      float* dst;
      if (h < heads) dst = qp + ((h / g) * g * t_rows + (h % g) * t_rows + t) * d;
      else if (h < heads + kv_heads) dst = kp + ((h - heads) * slots + start + t) * d;
      else dst = vp + ((h - heads - kv_heads) * slots + start + t) * d;
      if (h >= heads + kv_heads) {
        for (int64_t j = 0; j < d; ++j) dst[j] = static_cast<float>(x[j]);
        continue;
      }
      for (int64_t j = 0; j < half; ++j) {
        const float a = static_cast<float>(x[j]), b = static_cast<float>(x[j + half]);
        dst[j] = a * ct[j] - b * st[j];
        dst[j + half] = b * ct[j + half] + a * st[j + half];
      }
    }
  }
  return q;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rope_store", &rope_store, "RoPE on q and k, k and v into the cache, q in grouped layout");
  m.def("add_rms_norm", &add_rms_norm, "x += delta; rms_norm(x) * w as bf16, per row");
  m.def("silu_mul", &silu_mul, "silu(gate) * up as bf16, per row");
}
