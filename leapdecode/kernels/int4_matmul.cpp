// y = x W^T for 4-bit weights against 8-bit activations, the way llama.cpp computes its Q4 x Q8 dot
// products: integer dot products of 32-element groups (VNNI where the CPU has it), one float scale step
// per group. Decoding and verifying a draft are bound by reading the weights; this kernel reads each
// 16-row weight tile once per call and applies it to every activation row, so 8 rows cost little more
// than one.
//
// Weights are repacked once at load (leapdecode/models/int4_tiles.py): tiles of 16 output rows, and per
// tile and 32-column group 320 bytes: 256 bytes of nibbles, then 16 fp16 scales, then 16 fp16 offsets
// (w = q * scale + offset, q in 0..15). Nibble byte (v, n, j) of a group holds q[n, 4v + j] in its low
// half and q[n, 16 + 4v + j] in its high half: one 64-byte load feeds two VNNI steps of 16 rows each.
//
// Every output element is computed by the same sequence of operations whatever the number of rows, the
// row's place in the batch or the thread that runs it: integer sums are exact, and the float steps run in
// a fixed order through explicit intrinsics. That is what keeps speculative decoding at int4 lossless
// against plain int4 decoding. The build passes -ffp-contract=off so the scalar code keeps that too.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kTile = 16;        // output rows per weight tile
constexpr int kGroup = 32;       // columns per quantization group
constexpr int kGroupBytes = 320;  // 256 nibble bytes + 16 fp16 scales + 16 fp16 offsets
constexpr int kRowsPerPass = 8;  // activation rows sharing one pass over a tile's groups

// Activations quantized per row and group: x ~ dx * xq, with xs = dx * sum(xq) for the offset term.
struct QuantRows {
  const int8_t* xq;   // [M, K]
  const float* dx;    // [M, G]
  const float* xs;    // [M, G]
  int64_t k, groups;
};

void quantize_row(const c10::BFloat16* x, int64_t k, int8_t* xq, float* dx, float* xs) {
  for (int64_t g = 0; g < k / kGroup; ++g) {
    const c10::BFloat16* xg = x + g * kGroup;
    float amax = 0.f;
    for (int j = 0; j < kGroup; ++j) amax = std::max(amax, std::fabs(static_cast<float>(xg[j])));
    const float d = amax / 127.f;
    const float inv = d > 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int j = 0; j < kGroup; ++j) {
      const int q = static_cast<int>(std::nearbyint(static_cast<float>(xg[j]) * inv));
      xq[g * kGroup + j] = static_cast<int8_t>(q);
      sum += q;
    }
    dx[g] = d;
    xs[g] = d * static_cast<float>(sum);
  }
}

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// 16 output rows per vector; VNNI: u8 weights x s8 activations, four products summed per lane.
template <int R>
void tile_rows(const uint8_t* tile, const QuantRows& a, int64_t m0, float* acc /* [R, 16] */) {
  __m512 sum[R];
  for (int r = 0; r < R; ++r) sum[r] = _mm512_setzero_ps();
  const __m512i low = _mm512_set1_epi8(0x0F);
  const int8_t* xq = a.xq + m0 * a.k;
  const float* dx = a.dx + m0 * a.groups;
  const float* xs = a.xs + m0 * a.groups;
  for (int64_t g = 0; g < a.groups; ++g) {
    const uint8_t* blk = tile + g * kGroupBytes;
    __m512i w[8];
    for (int v = 0; v < 4; ++v) {
      const __m512i raw = _mm512_loadu_si512(blk + 64 * v);
      w[v] = _mm512_and_si512(raw, low);
      w[v + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 256)));
    const __m512 offset = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 288)));
    for (int r = 0; r < R; ++r) {
      const int8_t* xg = xq + r * a.k + g * kGroup;
      // Four chains of two: VNNI's latency, not its throughput, would bound one chain of eight.
      __m512i part[4];
      for (int v = 0; v < 4; ++v) {
        part[v] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[v], _mm512_set1_epi32(load_i32(xg + 4 * v)));
        part[v] = _mm512_dpbusd_epi32(part[v], w[v + 4], _mm512_set1_epi32(load_i32(xg + 16 + 4 * v)));
      }
      const __m512i sum4 = _mm512_add_epi32(_mm512_add_epi32(part[0], part[1]), _mm512_add_epi32(part[2], part[3]));
      const __m512 dot = _mm512_cvtepi32_ps(sum4);
      const int64_t at = r * a.groups + g;
      sum[r] = _mm512_fmadd_ps(dot, _mm512_mul_ps(scale, _mm512_set1_ps(dx[at])), sum[r]);
      sum[r] = _mm512_fmadd_ps(offset, _mm512_set1_ps(xs[at]), sum[r]);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(acc + r * kTile, sum[r]);
}
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
// Two halves of 8 rows per tile; u8 x s8 products through maddubs (no overflow: 15 * 127 * 2 < 2^15) and
// madd into int32 lanes, or AVX-VNNI where the CPU has it.
inline __m256i dot4(__m256i acc, __m256i w, __m256i x) {
#if defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, w, x);
#else
  const __m256i pairs = _mm256_maddubs_epi16(w, x);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

template <int R>
void tile_rows(const uint8_t* tile, const QuantRows& a, int64_t m0, float* acc /* [R, 16] */) {
  __m256 sum[R][2];
  for (int r = 0; r < R; ++r) sum[r][0] = sum[r][1] = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int64_t g = 0; g < a.groups; ++g) {
    const uint8_t* blk = tile + g * kGroupBytes;
    for (int h = 0; h < 2; ++h) {
      __m256i w[8];
      for (int v = 0; v < 4; ++v) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * v + 32 * h));
        w[v] = _mm256_and_si256(raw, low);
        w[v + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
      }
      const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 256 + 16 * h)));
      const __m256 offset = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 288 + 16 * h)));
      for (int r = 0; r < R; ++r) {
        const int8_t* xq = a.xq + (m0 + r) * a.k + g * kGroup;
        __m256i dot = _mm256_setzero_si256();
        for (int v = 0; v < 8; ++v) dot = dot4(dot, w[v], _mm256_set1_epi32(load_i32(xq + 4 * v)));
        const int64_t at = (m0 + r) * a.groups + g;
        sum[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(scale, _mm256_set1_ps(a.dx[at])),
                                    sum[r][h]);
        sum[r][h] = _mm256_fmadd_ps(offset, _mm256_set1_ps(a.xs[at]), sum[r][h]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(acc + r * kTile, sum[r][0]);
    _mm256_storeu_ps(acc + r * kTile + 8, sum[r][1]);
  }
}
#else
// Portable fallback: the same arithmetic, one lane at a time (std::fma keeps the fused step of the
// vector paths).
template <int R>
void tile_rows(const uint8_t* tile, const QuantRows& a, int64_t m0, float* acc /* [R, 16] */) {
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < kTile; ++n) acc[r * kTile + n] = 0.f;
  for (int64_t g = 0; g < a.groups; ++g) {
    const uint8_t* blk = tile + g * kGroupBytes;
    const c10::Half* scale = reinterpret_cast<const c10::Half*>(blk + 256);
    const c10::Half* offset = reinterpret_cast<const c10::Half*>(blk + 288);
    for (int r = 0; r < R; ++r) {
      const int8_t* xq = a.xq + (m0 + r) * a.k + g * kGroup;
      const int64_t at = (m0 + r) * a.groups + g;
      for (int n = 0; n < kTile; ++n) {
        int32_t dot = 0;
        for (int v = 0; v < 4; ++v)
          for (int j = 0; j < 4; ++j) {
            const uint8_t b = blk[64 * v + 4 * n + j];
            dot += (b & 0x0F) * xq[4 * v + j] + (b >> 4) * xq[16 + 4 * v + j];
          }
        float& s = acc[r * kTile + n];
        s = std::fma(static_cast<float>(dot), static_cast<float>(scale[n]) * a.dx[at], s);
        s = std::fma(static_cast<float>(offset[n]), a.xs[at], s);
      }
    }
  }
}
#endif

// Rows [m0, m0 + R) against one tile -> y[:, tile rows], rounded to bf16 once, after the bias.
template <int R>
void tile_out(const uint8_t* tile, const QuantRows& a, int64_t m0, int64_t n0, int64_t n_out,
              const float* bias, c10::BFloat16* y) {
  float acc[R * kTile];
  tile_rows<R>(tile, a, m0, acc);
  const int64_t valid = std::min<int64_t>(kTile, n_out - n0);
  for (int r = 0; r < R; ++r)
    for (int64_t n = 0; n < valid; ++n) {
      const float b = bias != nullptr ? bias[n0 + n] : 0.f;
      y[(m0 + r) * n_out + n0 + n] = c10::BFloat16(acc[r * kTile + n] + b);
    }
}

void one_tile(const uint8_t* tile, const QuantRows& a, int64_t m, int64_t n0, int64_t n_out, const float* bias,
              c10::BFloat16* y) {
  int64_t m0 = 0;
  for (; m0 + kRowsPerPass <= m; m0 += kRowsPerPass) tile_out<kRowsPerPass>(tile, a, m0, n0, n_out, bias, y);
  switch (m - m0) {
    case 7: tile_out<7>(tile, a, m0, n0, n_out, bias, y); break;
    case 6: tile_out<6>(tile, a, m0, n0, n_out, bias, y); break;
    case 5: tile_out<5>(tile, a, m0, n0, n_out, bias, y); break;
    case 4: tile_out<4>(tile, a, m0, n0, n_out, bias, y); break;
    case 3: tile_out<3>(tile, a, m0, n0, n_out, bias, y); break;
    case 2: tile_out<2>(tile, a, m0, n0, n_out, bias, y); break;
    case 1: tile_out<1>(tile, a, m0, n0, n_out, bias, y); break;
    default: break;
  }
}

}  // namespace

// x [M, K] bf16, packed [N/16 tiles, K/32, 320] uint8 (see the header), bias [N] float32 or None
// -> y [M, n_out] bf16.
torch::Tensor int4_matmul(torch::Tensor x, torch::Tensor packed, int64_t n_out, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.dim() == 2, "int4_matmul: x [M, K] bf16");
  TORCH_CHECK(packed.scalar_type() == torch::kUInt8 && packed.dim() == 3 && packed.size(2) == kGroupBytes &&
                  packed.is_contiguous(), "int4_matmul: packed [N/16, K/32, 320] uint8");
  const int64_t m = x.size(0), k = x.size(1), tiles = packed.size(0), groups = packed.size(1);
  TORCH_CHECK(k == groups * kGroup && n_out <= tiles * kTile, "int4_matmul: shapes do not match");
  auto xc = x.contiguous();
  // The quantized rows live in buffers kept per calling thread: a decode step makes ~120 calls, and three
  // tensor allocations each cost more than quantizing a row.
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> dx, xs;
  xq.resize(m * k);
  dx.resize(m * groups);
  xs.resize(m * groups);
  const auto* xp = xc.data_ptr<c10::BFloat16>();
  for (int64_t r = 0; r < m; ++r)
    quantize_row(xp + r * k, k, xq.data() + r * k, dx.data() + r * groups, xs.data() + r * groups);
  const QuantRows a{xq.data(), dx.data(), xs.data(), k, groups};
  torch::Tensor bc;
  const float* bp = nullptr;
  if (bias.has_value()) {
    bc = bias->to(torch::kFloat32).contiguous();
    TORCH_CHECK(bc.numel() == n_out, "int4_matmul: bias [N]");
    bp = bc.data_ptr<float>();
  }
  auto y = torch::empty({m, n_out}, x.options());
  auto* yp = y.data_ptr<c10::BFloat16>();
  const auto* wp = packed.data_ptr<uint8_t>();
  const int64_t tile_bytes = groups * kGroupBytes;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) one_tile(wp + t * tile_bytes, a, m, t * kTile, n_out, bp, yp);
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("int4_matmul", &int4_matmul, "4-bit weights x 8-bit activations, row-invariant, bf16 out");
}
