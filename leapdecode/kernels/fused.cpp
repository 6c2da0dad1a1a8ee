// Fused glue for the decode step in reduced precision: each call replaces several small PyTorch ops whose
// dispatch, not arithmetic, is what they cost at one or a few rows. Every row is computed by the same loop
// whatever the number of rows, so verifying a draft gives each row the bits plain decoding gives it.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <cmath>
#include <vector>

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

namespace {

// A dot product over d floats with 16 running sums, so the compiler vectorises it without reassociating:
// the order of additions is fixed by this code, not by the compiler or by the batch.
inline float dot16(const float* a, const float* b, int64_t d) {
  float acc[16] = {0.f};
  int64_t j = 0;
  for (; j + 16 <= d; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[j + l] * b[j + l];
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += acc[l];
  for (; j < d; ++j) s += a[j] * b[j];
  return s;
}

inline void rope_row(const c10::BFloat16* x, const float* ct, const float* st, float* dst, int64_t half) {
  for (int64_t j = 0; j < half; ++j) {
    const float a = static_cast<float>(x[j]), b = static_cast<float>(x[j + half]);
    dst[j] = a * ct[j] - b * st[j];
    dst[j + half] = b * ct[j + half] + a * st[j + half];
  }
}

}  // namespace

// Attention for several sequences' new rows in one call, each against its own cache: the decode step of a
// batch (or of one sequence) without a dispatch per sequence and layer.
// qkv [R, (H + 2 Hkv) * D] bf16, the rows of every segment in order; cos, sin [R, D] float32.
// k_caches, v_caches: one float32 [1, Hkv, S, D] per segment; starts: each segment's first cache slot;
// lens: its rows; masks: [T, >= start + T] bool (True = may attend) or an empty tensor for causal.
// Rotates and stores k and v, then returns softmax(q k^T / sqrt(D)) v as [R, H * D] float32. Every row is
// computed by the same loops over exactly the keys it sees, whatever else is in the call.
torch::Tensor attend_packed(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin,
                            std::vector<torch::Tensor> k_caches, std::vector<torch::Tensor> v_caches,
                            std::vector<int64_t> starts, std::vector<int64_t> lens, std::vector<torch::Tensor> masks,
                            int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.scalar_type() == torch::kBFloat16 && qkv.dim() == 2, "attend_packed: qkv [R, W] bf16");
  const int64_t rows = qkv.size(0), d = cos.size(1), half = d / 2, g = heads / kv_heads;
  const int64_t nseg = static_cast<int64_t>(starts.size()), width = (heads + 2 * kv_heads) * d;
  TORCH_CHECK(qkv.size(1) == width && k_caches.size() == starts.size() && v_caches.size() == starts.size() &&
              lens.size() == starts.size() && masks.size() == starts.size(), "attend_packed: shapes");
  std::vector<int64_t> seg_of, t_of;
  for (int64_t s = 0; s < nseg; ++s) {
    TORCH_CHECK(k_caches[s].scalar_type() == torch::kFloat32 && k_caches[s].is_contiguous() &&
                v_caches[s].is_contiguous() && starts[s] + lens[s] <= k_caches[s].size(2), "attend_packed: cache");
    for (int64_t t = 0; t < lens[s]; ++t) { seg_of.push_back(s); t_of.push_back(t); }
  }
  TORCH_CHECK(static_cast<int64_t>(seg_of.size()) == rows, "attend_packed: lens must add up to the rows");
  auto in = qkv.contiguous();
  auto c = cos.to(torch::kFloat32).contiguous(), sn = sin.to(torch::kFloat32).contiguous();
  const auto* src = in.data_ptr<c10::BFloat16>();
  const float *cp = c.data_ptr<float>(), *sp = sn.data_ptr<float>();
  // Keys and values of every new row first: a row attends to the rows before it in its own segment.
  at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = seg_of[r], slot = starts[s] + t_of[r], slots = k_caches[s].size(2);
      float *kp = k_caches[s].data_ptr<float>(), *vp = v_caches[s].data_ptr<float>();
      for (int64_t h = 0; h < kv_heads; ++h) {
        rope_row(src + r * width + (heads + h) * d, cp + r * d, sp + r * d, kp + (h * slots + slot) * d, half);
        const c10::BFloat16* v = src + r * width + (heads + kv_heads + h) * d;
        for (int64_t j = 0; j < d; ++j) vp[(h * slots + slot) * d + j] = static_cast<float>(v[j]);
      }
    }
  });
  auto out = torch::empty({rows, heads * d}, c.options());
  float* op = out.data_ptr<float>();
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  at::parallel_for(0, rows * heads, 1, [&](int64_t w0, int64_t w1) {
    std::vector<float> q(d), p;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t r = w / heads, h = w % heads, s = seg_of[r], t = t_of[r], slots = k_caches[s].size(2);
      const bool masked = masks[s].numel() > 0;
      const int64_t keys = masked ? starts[s] + lens[s] : starts[s] + t + 1;
      const bool* m = masked ? masks[s].data_ptr<bool>() + t * masks[s].size(1) : nullptr;
      rope_row(src + r * width + h * d, cp + r * d, sp + r * d, q.data(), half);
      const float* kp = k_caches[s].data_ptr<float>() + (h / g) * slots * d;
      const float* vp = v_caches[s].data_ptr<float>() + (h / g) * slots * d;
      p.assign(keys, 0.f);
      float mx = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        if (m != nullptr && !m[j]) continue;
        p[j] = dot16(q.data(), kp + j * d, d) * scale;
        mx = std::max(mx, p[j]);
      }
      float sum = 0.f;
      for (int64_t j = 0; j < keys; ++j) {
        p[j] = (m != nullptr && !m[j]) ? 0.f : std::exp(p[j] - mx);
        sum += p[j];
      }
      float* o = op + r * heads * d + h * d;
      for (int64_t l = 0; l < d; ++l) o[l] = 0.f;
      for (int64_t j = 0; j < keys; ++j) {
        if (p[j] == 0.f) continue;
        const float pj = p[j];
        const float* vj = vp + j * d;
        for (int64_t l = 0; l < d; ++l) o[l] += pj * vj[l];
      }
      const float inv = 1.f / sum;
      for (int64_t l = 0; l < d; ++l) o[l] *= inv;
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attend_packed", &attend_packed, "rope, cache write and attention for many sequences in one call");
  m.def("rope_store", &rope_store, "RoPE on q and k, k and v into the cache, q in grouped layout");
  m.def("add_rms_norm", &add_rms_norm, "x += delta; rms_norm(x) * w as bf16, per row");
  m.def("silu_mul", &silu_mul, "silu(gate) * up as bf16, per row");
}
