// Native whole-sequence kernel of the JSLDS / RNN training path (auxfn.jslds.native).
//
// The same computation as auxfn/jslds/fused.py (_Sequence): the RNN and/or the JSLDS over all T
// steps, forward and a hand-written BPTT, with the rows of a step stacked as
//     [h_{t-1} (H rows); e_t (K rows); a_{t-1} - e_t (K rows)],  M = H + K primal rows, R = M + K.
// Each stacked row carries [state (n) | inputs (u) | 1 or 0] so the inputs and biases ride in the
// recurrent products. Read fused.py's docstring for the equations; this file only changes how they
// run: the matmuls go to ATen (at::mm_out into preallocated buffers, so BLAS and torch's intra-op
// threads are kept), and the pointwise work of a step is fused into a few loops over the rows,
// which the compiler vectorises (tanh through glibc's vector math library, see AUXFN_LIBMVEC).
// Python then pays two calls per training step instead of about a hundred ops per time step.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <type_traits>
#include <vector>

// glibc's vector math library (libmvec, glibc >= 2.35 for tanh) has SIMD versions of tanh; its
// headers declare them only under -ffast-math, which would also let the compiler reassociate sums
// and drop NaN checks. Declaring the SIMD variants ourselves lets the loops below call them while
// keeping IEEE semantics. The Python loader defines AUXFN_LIBMVEC only where it links -lmvec.
#ifdef AUXFN_LIBMVEC
extern "C" {
__attribute__((simd("notinbranch"))) float tanhf(float) noexcept;
__attribute__((simd("notinbranch"))) double tanh(double) noexcept;
}
#endif

namespace {

using at::Tensor;

enum Kind : int64_t { GRU = 0, TANH = 1, RELU = 2 };

// sigma(x) = (1 + tanh(x / 2)) / 2: tanh is the one transcendental the vector math library gives
// us for float and double alike, and this form has no overflow for large |x|.
template <typename T>
inline T sigm(T x) {
  return T(0.5) * std::tanh(T(0.5) * x) + T(0.5);
}

#ifndef AUXFN_GRAIN
#define AUXFN_GRAIN 16384
#endif
constexpr int64_t kGrain = AUXFN_GRAIN;  // elements per chunk of work handed to one thread

// Runs f(i) for the rows [0, rows); across torch's intra-op threads only when the block is big
// enough (about 16k elements per chunk) to pay for waking them: at n=64, B=64 it runs inline.
template <typename Fn>
inline void for_rows(int64_t rows, int64_t width, const Fn& f) {
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(width, 1));
  at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

// ------------------------------------------------------------------------------------ products
// The per-step products go straight to the Fortran BLAS that libtorch_cpu carries (MKL on x86
// wheels; torch calls it with 32-bit ints too, and sets its thread count): through at::mm_out each
// small product also paid the dispatcher, output checks and the tensor views of its operands,
// about a tenth of a step at n=64. Where libtorch_cpu exports no sgemm_/dgemm_, or they fail a
// one-time check against at::mm, the products go through at::mm_out on views of the same memory.
using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                          const int*, const float*, const int*, const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                          const int*, const double*, const int*, const double*, double*, const int*);

struct Blas {
  sgemm_fn s = nullptr;
  dgemm_fn d = nullptr;
};

template <typename T>
void gemm_aten(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, bool ta, const T* B, int64_t ldb, bool tb,
               T beta, T* C, int64_t ldc) {
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool tr) {
    Tensor v = at::from_blob(const_cast<T*>(p), {tr ? cols : rows, tr ? rows : cols}, {ld, 1}, opts);
    return tr ? v.t() : v;
  };
  Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (beta == T(0)) {
    at::mm_out(c, view(A, M, K, lda, ta), view(B, K, N, ldb, tb));
  } else {
    c.addmm_(view(A, M, K, lda, ta), view(B, K, N, ldb, tb), beta, 1);
  }
}

// Row-major C (M x N) = op(A) (M x K) op(B) (K x N) + beta C, each operand with its row stride.
// Column-major BLAS sees each row-major matrix transposed, so it computes C^T = op(B)^T op(A)^T.
template <typename T>
void gemm_blas(const Blas& b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, bool ta, const T* B,
               int64_t ldb, bool tb, T beta, T* C, int64_t ldc) {
  const char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const T one = T(1);
  if constexpr (std::is_same_v<T, float>) {
    b.s(&tra, &trb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  } else {
    b.d(&tra, &trb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  }
}

bool blas_agrees(const Blas& b) {
  // 3 x 4 @ 4 x 5 with transposes and padded leading dimensions, against at::mm in float64 (fixed
  // values: drawing random ones would move the user's global generator)
  Tensor A = at::arange(28, at::kDouble).view({4, 7}).sin(), B = at::arange(30, at::kDouble).view({5, 6}).cos();
  Tensor ref = at::mm(A.narrow(1, 0, 3).t(), B.narrow(1, 0, 4).t());
  bool ok = true;
  for (int pass = 0; pass < 2; ++pass) {
    Tensor C = at::zeros({3, 8}, at::kDouble);
    if (pass == 0) {
      gemm_blas<double>(b, 3, 5, 4, A.data_ptr<double>(), 7, true, B.data_ptr<double>(), 6, true, 0.0,
                        C.data_ptr<double>(), 8);
      ok = ok && at::allclose(C.narrow(1, 0, 5), ref, 1e-12, 1e-12);
    } else {
      Tensor Af = A.to(at::kFloat), Bf = B.to(at::kFloat), Cf = C.to(at::kFloat);
      gemm_blas<float>(b, 3, 5, 4, Af.data_ptr<float>(), 7, true, Bf.data_ptr<float>(), 6, true, 0.f,
                       Cf.data_ptr<float>(), 8);
      ok = ok && at::allclose(Cf.narrow(1, 0, 5).to(at::kDouble), ref, 1e-5, 1e-5);
    }
  }
  return ok;
}

const Blas& blas() {
  static const Blas found = [] {
    Blas b;
#ifdef AUXFN_NO_DIRECT_BLAS  // build switch: exercise the at::mm_out path
    return b;
#endif
    void* h = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (h != nullptr) {
      b.s = reinterpret_cast<sgemm_fn>(dlsym(h, "sgemm_"));
      b.d = reinterpret_cast<dgemm_fn>(dlsym(h, "dgemm_"));
    }
    if (b.s == nullptr || b.d == nullptr || !blas_agrees(b)) b = Blas{};
    return b;
  }();
  return found;
}

template <typename T>
inline void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, bool ta, const T* B, int64_t ldb, bool tb,
                 T* C, int64_t ldc, T beta = T(0)) {
  const Blas& b = blas();
  if (b.s != nullptr) {
    gemm_blas<T>(b, M, N, K, A, lda, ta, B, ldb, tb, beta, C, ldc);
  } else {
    gemm_aten<T>(M, N, K, A, lda, ta, B, ldb, tb, beta, C, ldc);
  }
}

// ------------------------------------------------------------------------------------ buffers
// The forward pass fills about 70 MB of buffers at paper size (n=100, B=256, T=25). Large blocks
// fresh from malloc are often fresh pages from the OS (glibc maps big blocks and returns memory when
// they are freed), paid for in page faults at first touch: with glibc's mmap and trim thresholds
// raised for the whole process, a paper-size training step went from 0.103 to 0.086 s, and the
// kernel alone (A/B, same process) was 3-5 % faster with this pool. So buffers come from a pool of
// earlier ones: a pooled block is handed out again only when no tensor references its storage any
// more (its storage's use count is the pool's own), so trajectories a caller keeps are never
// overwritten. The pool keeps at most kPoolBytes of blocks; release_buffers() empties it.
constexpr int64_t kPoolBytes = int64_t(1) << 30;

class BufferPool {
 public:
  Tensor take(at::IntArrayRef sizes, const at::TensorOptions& opts) {
    const int64_t numel = c10::multiply_integers(sizes);
    const auto dtype = opts.dtype().toScalarType();
    std::lock_guard<std::mutex> lock(mu_);
    for (const Tensor& p : pool_) {
      if (p.numel() == numel && p.scalar_type() == dtype && p.storage().use_count() == 1) return p.view(sizes);
    }
    Tensor fresh = at::empty({numel}, opts);
    trim(fresh.nbytes());
    if (bytes_ + static_cast<int64_t>(fresh.nbytes()) <= kPoolBytes) {
      pool_.push_back(fresh);
      bytes_ += static_cast<int64_t>(fresh.nbytes());
    }
    return fresh.view(sizes);
  }

  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    pool_.clear();
    bytes_ = 0;
  }

 private:
  // drop free blocks (oldest first) until `incoming` more bytes fit under the cap
  void trim(size_t incoming) {
    for (auto it = pool_.begin(); it != pool_.end() && bytes_ + static_cast<int64_t>(incoming) > kPoolBytes;) {
      if (it->storage().use_count() == 1) {
        bytes_ -= static_cast<int64_t>(it->nbytes());
        it = pool_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::mutex mu_;
  std::vector<Tensor> pool_;
  int64_t bytes_ = 0;
};

BufferPool& pool() {
  static BufferPool p;
  return p;
}

inline Tensor buffer(at::IntArrayRef sizes, const at::TensorOptions& opts) { return pool().take(sizes, opts); }

void release_buffers() { pool().release(); }

struct Dims {
  int64_t B, n, T, H, K, M, R, m, L;
  Kind kind;
};

Dims make_dims(int64_t kind, bool rnn, bool jslds, const Tensor& s0, const Tensor& X, int64_t L) {
  TORCH_CHECK(kind >= 0 && kind <= 2, "sequence kernel: kind must be 0 (gru), 1 (tanh) or 2 (relu)");
  TORCH_CHECK(rnn || jslds, "sequence kernel: at least one of rnn and jslds must be run");
  TORCH_CHECK(s0.dim() == 2 && X.dim() == 3, "sequence kernel: s0 must be (B, n) and X (T, R, u + 1)");
  Dims d;
  d.kind = static_cast<Kind>(kind);
  d.B = s0.size(0);
  d.n = s0.size(1);
  d.T = X.size(0);
  d.H = rnn ? d.B : 0;
  d.K = jslds ? d.B : 0;
  d.M = d.H + d.K;
  d.R = d.M + d.K;
  d.m = d.n + X.size(2);
  d.L = jslds ? L : 0;
  TORCH_CHECK(X.size(1) == d.R, "sequence kernel: X has ", X.size(1), " rows per step, expected ", d.R);
  TORCH_CHECK(!jslds || L >= 1, "sequence kernel: the JSLDS needs at least one expansion layer");
  return d;
}

// ------------------------------------------------------------------------------------ forward

// E's layers for step t: z <- tanh(z M_l + b_l). The hidden layers' outputs are kept (backward
// needs them); the last writes e_t into the stacked rows and the tangent a_{t-1} - e_t beside it.
template <typename T>
void expansion_step(const Dims& d, int64_t t, const T* a_prev, const std::vector<Tensor>& Eb,
                    const std::vector<Tensor>& Em, const std::vector<Tensor>& Zs, T* scratch, T* S_t) {
  const int64_t n = d.n, m = d.m, H = d.H, M = d.M;
  const T* z = a_prev;
  for (int64_t l = 0; l < d.L; ++l) {
    const bool last = l == d.L - 1;
    T* o = last ? scratch : Zs[l].data_ptr<T>() + t * d.B * n;
    gemm<T>(d.B, n, n, z, n, false, Em[l].data_ptr<T>(), n, false, o, n);
    const T* b = Eb[l].data_ptr<T>();
    if (!last) {
      for_rows(d.B, n, [&](int64_t i) {
        T* r = o + i * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) r[j] = std::tanh(r[j] + b[j]);
      });
      z = o;
    } else {
      for_rows(d.B, n, [&](int64_t i) {
        const T* r = o + i * n;
        const T* ap = a_prev + i * n;
        T* e = S_t + (H + i) * m;
        T* ds = S_t + (M + i) * m;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T ev = std::tanh(r[j] + b[j]);
          e[j] = ev;
          ds[j] = ap[j] - ev;
        }
      });
    }
  }
}

template <typename T>
std::vector<Tensor> forward_impl(const Dims& d, const Tensor& s0, const Tensor& X, const Tensor& Wa,
                                 const c10::optional<Tensor>& Wb_opt, const std::vector<Tensor>& Eb,
                                 const std::vector<Tensor>& Em) {
  const int64_t B = d.B, n = d.n, T_ = d.T, H = d.H, K = d.K, M = d.M, R = d.R, m = d.m;
  const bool gru = d.kind == GRU, relu = d.kind == RELU;
  auto opts = s0.options();
  Tensor S = buffer({T_, R, m}, opts);
  // the inputs' columns [x | 1] of every stacked row, read from X with whatever strides it has
  // (the model hands a transposed view: a dense copy first would cost as much as this loop)
  auto put_inputs = [&](Tensor& dst) {
    const auto xa = X.accessor<T, 3>();
    T* base = dst.data_ptr<T>();
    const int64_t ux = m - n;
    at::parallel_for(0, T_ * R, std::max<int64_t>(1, kGrain / ux), [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        const int64_t t = q / R, r = q % R;
        T* row = base + q * m + n;
        for (int64_t j = 0; j < ux; ++j) row[j] = xa[t][r][j];
      }
    });
  };
  put_inputs(S);
  Tensor F = buffer({T_, M, n}, opts);
  Tensor A = buffer({K ? T_ : 0, K, n}, opts);
  std::vector<Tensor> Zs;
  for (int64_t l = 0; l + 1 < d.L; ++l) Zs.push_back(buffer({T_, B, n}, opts));
  Tensor scratch = buffer({B, n}, opts);
  Tensor G, RZ, Cin, CC, C, DRZ, DC, Z;
  if (gru) {
    G = buffer({T_, R, 2 * n}, opts);
    RZ = buffer({T_, M, 2 * n}, opts);
    Cin = buffer({T_, R, m}, opts);
    put_inputs(Cin);
    CC = buffer({T_, R, n}, opts);
    C = buffer({T_, M, n}, opts);
    DRZ = buffer({T_, K, 2 * n}, opts);
    DC = buffer({T_, K, n}, opts);
  } else {
    Z = buffer({T_, R, n}, opts);
  }
  const Tensor Wb = gru ? Wb_opt.value() : Tensor();
  const T* s0p = s0.data_ptr<T>();
  T* Sp = S.data_ptr<T>();
  T* Fp = F.data_ptr<T>();
  T* Ap = K ? A.data_ptr<T>() : nullptr;
  // sum_j (F(e) - e)^2 and sum_j (h - a)^2 of every step and JSLDS row, in double: the fixed-point
  // and approx loss terms read their totals from here instead of a pass over the trajectories each
  Tensor rowsq = at::empty({K ? T_ : 0, K, 2}, opts.dtype(at::kDouble));
  double* rsq = K ? rowsq.data_ptr<double>() : nullptr;
  // the RNN rows of step 0 start from s0; later steps' are written by the previous step's loop
  for (int64_t i = 0; i < H; ++i) std::copy(s0p + i * n, s0p + (i + 1) * n, Sp + i * m);

  for (int64_t t = 0; t < T_; ++t) {
    T* S_t = Sp + t * R * m;
    T* S_next = t + 1 < T_ ? S_t + R * m : nullptr;
    T* F_t = Fp + t * M * n;
    T* A_t = K ? Ap + t * K * n : nullptr;
    if (K) {
      const T* a_prev = t == 0 ? s0p : Ap + (t - 1) * K * n;
      expansion_step<T>(d, t, a_prev, Eb, Em, Zs, scratch.data_ptr<T>(), S_t);
    }
    if (gru) {
      T* g = G.data_ptr<T>() + t * R * 2 * n;
      gemm<T>(R, 2 * n, m, S_t, m, false, Wa.data_ptr<T>(), 2 * n, false, g, 2 * n);
      T* rz = RZ.data_ptr<T>() + t * M * 2 * n;
      T* cin = Cin.data_ptr<T>() + t * R * m;
      T* drz = DRZ.data_ptr<T>() + t * K * 2 * n;
      // gates of every primal row; on an e row also the tangent row's [dr, dz] and d(r * s)
      for_rows(M, 3 * n, [&](int64_t i) {
        const T* gi = g + i * 2 * n;
        T* rzi = rz + i * 2 * n;
        const T* s = S_t + i * m;
        T* ci = cin + i * m;
#pragma omp simd
        for (int64_t j = 0; j < 2 * n; ++j) rzi[j] = sigm(gi[j]);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) ci[j] = rzi[j] * s[j];
        if (i >= H) {
          const int64_t k = i - H;
          const T* dg = g + (M + k) * 2 * n;
          T* dk = drz + k * 2 * n;
          const T* ds = S_t + (M + k) * m;
          T* ct = cin + (M + k) * m;
#pragma omp simd
          for (int64_t j = 0; j < 2 * n; ++j) dk[j] = rzi[j] * (T(1) - rzi[j]) * dg[j];  // sigma' dG
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) ct[j] = dk[j] * s[j] + rzi[j] * ds[j];  // dr * e + r_e * ds
        }
      });
      T* cc = CC.data_ptr<T>() + t * R * n;
      gemm<T>(R, n, m, cin, m, false, Wb.data_ptr<T>(), n, false, cc, n);
      T* c = C.data_ptr<T>() + t * M * n;
      T* dc = DC.data_ptr<T>() + t * K * n;
      // candidate and F on primal rows; on an e row also the JVP d and a = e + d
      for_rows(M, 2 * n, [&](int64_t i) {
        const T* cci = cc + i * n;
        const T* rzi = rz + i * 2 * n;
        const T* s = S_t + i * m;
        T* c_i = c + i * n;
        T* f = F_t + i * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T cv = std::tanh(cci[j]);
          c_i[j] = cv;
          f[j] = cv + rzi[n + j] * (s[j] - cv);
        }
        if (i < H) {
          if (S_next) std::copy(f, f + n, S_next + i * m);
        } else {
          const int64_t k = i - H;
          const T* cct = cc + (M + k) * n;
          const T* ds = S_t + (M + k) * m;
          const T* dz = drz + k * 2 * n + n;
          T* dck = dc + k * n;
          T* a = A_t + k * n;
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const T cv = c_i[j], z = rzi[n + j], e = s[j];
            const T dcv = (T(1) - cv * cv) * cct[j];
            dck[j] = dcv;
            a[j] = e + dz[j] * (e - cv) + z * ds[j] + (T(1) - z) * dcv;
          }
        }
      });
    } else {
      T* z = Z.data_ptr<T>() + t * R * n;
      gemm<T>(R, n, m, S_t, m, false, Wa.data_ptr<T>(), n, false, z, n);
      for_rows(M, 2 * n, [&](int64_t i) {
        const T* zi = z + i * n;
        T* f = F_t + i * n;
        if (relu) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) f[j] = zi[j] > T(0) ? zi[j] : T(0);
        } else {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) f[j] = std::tanh(zi[j]);
        }
        if (i < H) {
          if (S_next) std::copy(f, f + n, S_next + i * m);
        } else {
          const int64_t k = i - H;
          const T* zt = z + (M + k) * n;
          const T* e = S_t + i * m;
          T* a = A_t + k * n;
          if (relu) {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) a[j] = e[j] + (zi[j] > T(0) ? zt[j] : T(0));
          } else {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) a[j] = e[j] + (T(1) - f[j] * f[j]) * zt[j];
          }
        }
      });
    }
    if (K) {
      const T* F_c = F_t;
      const T* S_c = S_t;
      const T* A_c = A_t;
      for_rows(K, 2 * n, [&](int64_t k) {
        const T* fe = F_c + (H + k) * n;
        const T* e = S_c + (H + k) * m;
        double q = 0;
#pragma omp simd reduction(+ : q)
        for (int64_t j = 0; j < n; ++j) {
          const double v = fe[j] - e[j];
          q += v * v;
        }
        double r = 0;
        if (H) {
          const T* h = F_c + k * n;
          const T* a = A_c + k * n;
#pragma omp simd reduction(+ : r)
          for (int64_t j = 0; j < n; ++j) {
            const double v = h[j] - a[j];
            r += v * v;
          }
        }
        rsq[(t * K + k) * 2] = q;
        rsq[(t * K + k) * 2 + 1] = r;
      });
    }
  }
  // the two totals, summed in a fixed order (the same for any thread count)
  Tensor sums = at::zeros({2}, opts);
  if (K) {
    double q = 0, r = 0;
    for (int64_t i = 0; i < T_ * K; ++i) {
      q += rsq[2 * i];
      r += rsq[2 * i + 1];
    }
    sums.data_ptr<T>()[0] = static_cast<T>(q);
    sums.data_ptr<T>()[1] = static_cast<T>(r);
  }
  std::vector<Tensor> out{S, F, A};
  if (gru) {
    for (auto& x : {G, RZ, Cin, CC, C, DRZ, DC}) out.push_back(x);
  } else {
    out.push_back(Z);
  }
  for (auto& x : Zs) out.push_back(x);
  out.push_back(sums);  // last: not saved for the backward
  return out;
}

std::vector<Tensor> sequence_forward(int64_t kind, bool rnn, bool jslds, const Tensor& s0, const Tensor& X,
                                     const Tensor& Wa, const c10::optional<Tensor>& Wb, at::TensorList Eb,
                                     at::TensorList Em) {
  TORCH_CHECK(Eb.size() == Em.size(), "sequence kernel: one bias per expansion layer");
  const Dims d = make_dims(kind, rnn, jslds, s0, X, static_cast<int64_t>(Em.size()));
  TORCH_CHECK(d.kind != GRU || (Wb.has_value() && Wb->defined()), "sequence kernel: the GRU needs Wb");
  const Tensor s0c = s0.contiguous(), Wac = Wa.contiguous();
  c10::optional<Tensor> Wbc;
  if (d.kind == GRU) Wbc = Wb->contiguous();
  std::vector<Tensor> ebc, emc;
  for (int64_t l = 0; l < d.L; ++l) {
    ebc.push_back(Eb[l].contiguous());
    emc.push_back(Em[l].contiguous());
  }
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(s0.scalar_type(), "auxfn_jslds_sequence_forward", [&] {
    out = forward_impl<scalar_t>(d, s0c, X, Wac, Wbc, ebc, emc);
  });
  return out;
}

// ------------------------------------------------------------------------------------ backward

template <typename T>
std::vector<Tensor> backward_impl(const Dims& d, const Tensor& s0, const Tensor& Wa, const c10::optional<Tensor>& Wb_opt,
                                  const std::vector<Tensor>& Em, const std::vector<Tensor>& saved, const Tensor& gFh,
                                  const Tensor& gFe, const Tensor& gA, const Tensor& gEo, const std::vector<bool>& needs,
                                  double c_fp, double c_ap) {
  const int64_t B = d.B, n = d.n, T_ = d.T, H = d.H, K = d.K, M = d.M, R = d.R, m = d.m, L = d.L;
  const bool gru = d.kind == GRU, relu = d.kind == RELU;
  auto opts = s0.options();
  const Tensor &S = saved[0], &F = saved[1], &A = saved[2];
  Tensor G, RZ, Cin, CC, C, DRZ, DC, Z;
  std::vector<Tensor> Zs;
  size_t next = 3;
  if (gru) {
    G = saved[3]; RZ = saved[4]; Cin = saved[5]; CC = saved[6]; C = saved[7]; DRZ = saved[8]; DC = saved[9];
    next = 10;
  } else {
    Z = saved[3];
    next = 4;
  }
  for (; next < saved.size(); ++next) Zs.push_back(saved[next]);

  const int64_t wa_cols = gru ? 2 * n : n;
  // Gradients of one step's products: of the Wa products (gG), of the Wb products (gCC) and of E's
  // pre-activations per layer (gP). The weight gradients are accumulated step by step (BLAS with
  // beta = 1) while these are still in cache, instead of keeping all steps' for one product at the end.
  Tensor gG = buffer({R, wa_cols}, opts);
  Tensor gCC = gru ? buffer({R, n}, opts) : Tensor();
  std::vector<Tensor> gP;
  for (int64_t l = 0; l < L; ++l) gP.push_back(buffer({B, n}, opts));
  // needs: [s0, Wa, Wb, E]; a gradient not asked for comes back as an empty tensor (the Python side
  // hands None to autograd)
  const bool want_wa = needs[1], want_wb = gru && needs[2], want_e = K && needs[3];
  Tensor none = at::empty({0}, opts);
  Tensor gWa = want_wa ? at::empty({m, wa_cols}, opts) : none, gWb = want_wb ? at::empty({m, n}, opts) : none;
  std::vector<Tensor> gEb, gEm;
  for (int64_t l = 0; want_e && l < L; ++l) {
    gEb.push_back(at::empty({n}, opts));
    gEm.push_back(at::empty({n, n}, opts));
  }
  // the per-step products read the weights' state blocks (their first n rows) transposed, through
  // BLAS's transpose flag

  // per-step work buffers
  Tensor gh = buffer({H, n}, opts).zero_(), ga = buffer({K, n}, opts).zero_();
  Tensor gS = buffer({R, n}, opts), gCin = gru ? buffer({R, n}, opts) : Tensor();
  Tensor gs = buffer({M, n}, opts), g_rz = gru ? buffer({M, 2 * n}, opts) : Tensor();
  Tensor gex = buffer({K, n}, opts), gdsx = buffer({K, n}, opts), gd = buffer({K, n}, opts);
  Tensor gde = buffer({K, n}, opts), g_drz = gru ? buffer({K, 2 * n}, opts) : Tensor();
  Tensor Eg = buffer({B, n}, opts);

  const T* Sp = S.data_ptr<T>();
  const T* Fp = F.data_ptr<T>();
  const T* gFhp = H ? gFh.data_ptr<T>() : nullptr;
  const T* gFep = K ? gFe.data_ptr<T>() : nullptr;
  const T* gAp = K ? gA.data_ptr<T>() : nullptr;
  const T* gEop = K ? gEo.data_ptr<T>() : nullptr;
  // element (t, row, j) of an incoming gradient g is g[t * st + row * sr + j]
  const int64_t Fh_st = H ? gFh.stride(0) : 0, Fh_sr = H ? gFh.stride(1) : 0;
  const int64_t Fe_st = K ? gFe.stride(0) : 0, Fe_sr = K ? gFe.stride(1) : 0;
  const int64_t A_st = K ? gA.stride(0) : 0, A_sr = K ? gA.stride(1) : 0;
  const int64_t Eo_st = K ? gEo.stride(0) : 0, Eo_sr = K ? gEo.stride(1) : 0;
  T* ghp = gh.data_ptr<T>();
  T* gap = ga.data_ptr<T>();
  T* gsp = gs.data_ptr<T>();
  T* gexp = gex.data_ptr<T>();
  T* gdsxp = gdsx.data_ptr<T>();
  T* gdp = gd.data_ptr<T>();
  T* gdep = gde.data_ptr<T>();
  T* gSp = gS.data_ptr<T>();
  // the gradients of the fixed-point and approx sums of squares: cf (F(e) - e) on F(e), its negation
  // on e; ca (h - a) on h, its negation on a (cf = 2 dL/d sum (F(e) - e)^2, ca likewise)
  const T cf = static_cast<T>(c_fp), ca = static_cast<T>(c_ap);
  const T* Ap = K ? A.data_ptr<T>() : nullptr;

  for (int64_t t = T_ - 1; t >= 0; --t) {
    const T* S_t = Sp + t * R * m;
    const T* F_t = Fp + t * M * n;
    const T* A_t = K ? Ap + t * K * n : nullptr;
    T* gGt = gG.data_ptr<T>();
    const T beta = t == T_ - 1 ? T(0) : T(1);  // the first step of the backward pass sets, later ones add
    // the incoming gradient of an RNN row's F is gFh plus the gradient carried from step t + 1 (gh)
    if (gru) {
      const T* rz = RZ.data_ptr<T>() + t * M * 2 * n;
      const T* c = C.data_ptr<T>() + t * M * n;
      const T* g = G.data_ptr<T>() + t * R * 2 * n;
      const T* cc = CC.data_ptr<T>() + t * R * n;
      const T* drz = DRZ.data_ptr<T>() + t * K * 2 * n;
      const T* dc = DC.data_ptr<T>() + t * K * n;
      T* gcc = gCC.data_ptr<T>();
      T* grz = g_rz.data_ptr<T>();
      T* gdrz = g_drz.data_ptr<T>();
      // phase 1: through f = c + z (s - c) and, on e rows, through d = dz (e - c_e) + z_e ds + (1 - z_e) dc
      // (its second-order terms in c_e and z_e included), down to the candidate pre-activations
      for_rows(M, 3 * n, [&](int64_t i) {
        const T* rzi = rz + i * 2 * n;
        const T* s = S_t + i * m;
        const T* ci = c + i * n;
        T* gsi = gsp + i * n;
        T* gzi = grz + i * 2 * n + n;
        T* gcci = gcc + i * n;
        if (i < H) {
          const T* gfh = gFhp + t * Fh_st + i * Fh_sr;
          const T* ghi = ghp + i * n;
          const T* hi = F_t + i * n;
          const T* ai = K ? A_t + i * n : hi;  // no JSLDS rows: no approx term (ca = 0, h - h = 0)
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const T gf = gfh[j] + ghi[j] + ca * (hi[j] - ai[j]), z = rzi[n + j], cv = ci[j];
            gsi[j] = gf * z;
            gzi[j] = gf * (s[j] - cv);
            gcci[j] = (gf - gf * z) * (T(1) - cv * cv);
          }
        } else {
          const int64_t k = i - H;
          const T* gfe = gFep + t * Fe_st + k * Fe_sr;
          const T* gak = gAp + t * A_st + k * A_sr;
          const T* gacc = gap + k * n;
          const T* ds = S_t + (M + k) * m;
          const T* dck = dc + k * n;
          const T* dz = drz + k * 2 * n + n;
          const T* cct = cc + (M + k) * n;
          T* gdk = gdp + k * n;
          T* gexk = gexp + k * n;
          T* gdsk = gdsxp + k * n;
          T* gdzk = gdrz + k * 2 * n + n;
          T* gcct = gcc + (M + k) * n;
          const T* fe = F_t + i * n;
          const T* ak = A_t + k * n;
          const T* hk = H ? F_t + k * n : ak;  // no RNN rows: no approx term (ca = 0, a - a = 0)
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const T z = rzi[n + j], cv = ci[j], e = s[j];
            const T gf = gfe[j] + cf * (fe[j] - e);
            const T gdv = gak[j] + gacc[j] - ca * (hk[j] - ak[j]);
            gdk[j] = gdv;
            gdzk[j] = gdv * (e - cv);
            const T ge = gdv * dz[j];
            gexk[j] = ge;
            const T gdsv = gdv * z;
            gdsk[j] = gdsv;
            const T gdc = gdv - gdsv;
            const T slope = T(1) - cv * cv;
            gcct[j] = gdc * slope;
            gsi[j] = gf * z;
            gzi[j] = gf * (e - cv) + gdv * (ds[j] - dck[j]);
            // gc: from f, from d's dz (e - c_e) term, and dc = (1 - c_e^2) dcc's second-order term
            const T gc = (gf - gf * z) - ge - T(2) * gdc * cv * cct[j];
            gcci[j] = gc * slope;
          }
        }
      });
      T* gcin = gCin.data_ptr<T>();
      gemm<T>(R, n, n, gcc, n, false, Wb_opt->data_ptr<T>(), n, true, gcin, n);  // gCC W_c_h^T
      // phase 2: through r * s (primal) and dr * e + r_e * ds (tangent), then the gates' sigmoids
      // (on e rows with the sigma'' term of [dr, dz] = sigma'(g_e) dG)
      for_rows(M, 6 * n, [&](int64_t i) {
        const T* rzi = rz + i * 2 * n;
        const T* s = S_t + i * m;
        const T* gcp = gcin + i * n;
        T* gsi = gsp + i * n;
        T* gri = grz + i * 2 * n;
        T* ggi = gGt + i * 2 * n;
        if (i < H) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            gri[j] = gcp[j] * s[j];
            gsi[j] += gcp[j] * rzi[j];
          }
        } else {
          const int64_t k = i - H;
          const T* gT = gcin + (M + k) * n;
          const T* ds = S_t + (M + k) * m;
          const T* dr = drz + k * 2 * n;
          const T* dg = g + (M + k) * 2 * n;
          T* gexk = gexp + k * n;
          T* gdsk = gdsxp + k * n;
          T* gdk = gdrz + k * 2 * n;
          T* ggt = gGt + (M + k) * 2 * n;
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const T r = rzi[j], e = s[j], gt = gT[j];
            gri[j] = gcp[j] * e + gt * ds[j];
            gsi[j] += gcp[j] * r;
            gexk[j] += gt * dr[j];
            gdsk[j] += gt * r;
            gdk[j] = gt * e;
          }
#pragma omp simd
          for (int64_t j = 0; j < 2 * n; ++j) {
            const T v = rzi[j], gv = gdk[j];
            ggt[j] = gv * v * (T(1) - v);
            gri[j] += gv * dg[j] * (T(1) - T(2) * v);
          }
        }
#pragma omp simd
        for (int64_t j = 0; j < 2 * n; ++j) ggi[j] = gri[j] * rzi[j] * (T(1) - rzi[j]);
      });
    } else {
      const T* z = Z.data_ptr<T>() + t * R * n;
      for_rows(M, 2 * n, [&](int64_t i) {
        const T* zi = z + i * n;
        const T* f = F_t + i * n;
        T* ggi = gGt + i * n;
        if (i < H) {
          const T* gfh = gFhp + t * Fh_st + i * Fh_sr;
          const T* ghi = ghp + i * n;
          const T* ai = K ? A_t + i * n : f;  // no JSLDS rows: no approx term (ca = 0, h - h = 0)
          if (relu) {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) ggi[j] = zi[j] > T(0) ? gfh[j] + ghi[j] + ca * (f[j] - ai[j]) : T(0);
          } else {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) ggi[j] = (gfh[j] + ghi[j] + ca * (f[j] - ai[j])) * (T(1) - f[j] * f[j]);
          }
        } else {
          const int64_t k = i - H;
          const T* gfe = gFep + t * Fe_st + k * Fe_sr;
          const T* gak = gAp + t * A_st + k * A_sr;
          const T* gacc = gap + k * n;
          const T* zt = z + (M + k) * n;
          T* gdk = gdp + k * n;
          T* ggt = gGt + (M + k) * n;
          const T* e = S_t + i * m;
          const T* ak = A_t + k * n;
          const T* hk = H ? F_t + k * n : ak;  // no RNN rows: no approx term (ca = 0, a - a = 0)
          if (relu) {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) {
              const T gdv = gak[j] + gacc[j] - ca * (hk[j] - ak[j]);
              const bool on = zi[j] > T(0);
              gdk[j] = gdv;
              ggt[j] = on ? gdv : T(0);
              ggi[j] = on ? gfe[j] + cf * (f[j] - e[j]) : T(0);
            }
          } else {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) {
              const T gdv = gak[j] + gacc[j] - ca * (hk[j] - ak[j]), fv = f[j], slope = T(1) - fv * fv;
              gdk[j] = gdv;
              ggt[j] = gdv * slope;
              // d = (1 - f_e^2) dz: the second-order term -2 f_e dz on f_e
              ggi[j] = (gfe[j] + cf * (fv - e[j]) - T(2) * fv * zt[j] * gdv) * slope;
            }
          }
        }
      });
    }
    gemm<T>(R, n, wa_cols, gGt, wa_cols, false, Wa.data_ptr<T>(), wa_cols, true, gSp, n);  // gG W_h^T
    if (want_wa) gemm<T>(m, wa_cols, R, S_t, m, true, gGt, wa_cols, false, gWa.data_ptr<T>(), wa_cols, beta);  // += S^T gG
    if (want_wb) {
      gemm<T>(m, n, R, Cin.data_ptr<T>() + t * R * m, m, true, gCC.data_ptr<T>(), n, false, gWb.data_ptr<T>(), n, beta);
    }
    // phase 3: the state rows' gradients. RNN rows carry gh to step t - 1; e rows go back through
    // a = e + d, ds = a_{t-1} - e and E to a_{t-1}.
    const bool has_gs = gru;
    if (H) {
      for_rows(H, n, [&](int64_t i) {
        const T* gsr = gSp + i * n;
        const T* gsi = gsp + i * n;
        T* gh_i = ghp + i * n;
        if (has_gs) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) gh_i[j] = gsr[j] + gsi[j];
        } else {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) gh_i[j] = gsr[j];
        }
      });
    }
    if (K) {
      const T* e_rows = S_t + H * m;
      T* gp_last = gP[L - 1].data_ptr<T>();
      const T* gEot = gEop + t * Eo_st;
      for_rows(K, n, [&](int64_t k) {
        const T* e = e_rows + k * m;
        const T* gse = gSp + (H + k) * n;
        const T* gst = gSp + (M + k) * n;
        const T* gsi = gsp + (H + k) * n;
        const T* gdk = gdp + k * n;
        const T* gexk = gexp + k * n;
        const T* gdsk = gdsxp + k * n;
        const T* geo = gEot + k * Eo_sr;
        const T* fe = F_t + (H + k) * n;
        T* gdek = gdep + k * n;
        T* gp = gp_last + k * n;
        if (has_gs) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const T gdev = gst[j] + gdsk[j];
            gdek[j] = gdev;
            const T ge = gdk[j] + gse[j] + gsi[j] + geo[j] - cf * (fe[j] - e[j]) + gexk[j] - gdev;
            gp[j] = ge * (T(1) - e[j] * e[j]);
          }
        } else {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const T gdev = gst[j];
            gdek[j] = gdev;
            const T ge = gdk[j] + gse[j] + geo[j] - cf * (fe[j] - e[j]) - gdev;
            gp[j] = ge * (T(1) - e[j] * e[j]);
          }
        }
      });
      for (int64_t l = L - 1; l >= 0; --l) {
        T* egp = Eg.data_ptr<T>();
        gemm<T>(B, n, n, gP[l].data_ptr<T>(), n, false, Em[l].data_ptr<T>(), n, true, egp, n);  // gP M_l^T
        if (l > 0) {
          const T* zp = Zs[l - 1].data_ptr<T>() + t * B * n;
          T* gpp = gP[l - 1].data_ptr<T>();
          for_rows(B, n, [&](int64_t i) {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) {
              const T zv = zp[i * n + j];
              gpp[i * n + j] = egp[i * n + j] * (T(1) - zv * zv);
            }
          });
        } else {
          for_rows(K, n, [&](int64_t i) {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) gap[i * n + j] = egp[i * n + j] + gdep[i * n + j];
          });
        }
      }
      // E's weight gradients: layer l's input is a_{t-1} (s0 at t = 0) for the first, the previous
      // layer's output after; its bias gradient is the column sum of gP
      for (int64_t l = 0; want_e && l < L; ++l) {
        const T* in = l > 0 ? Zs[l - 1].data_ptr<T>() + t * B * n : (t == 0 ? s0.data_ptr<T>() : A.data_ptr<T>() + (t - 1) * K * n);
        const T* gp = gP[l].data_ptr<T>();
        gemm<T>(n, n, B, in, n, true, gp, n, false, gEm[l].data_ptr<T>(), n, beta);
        T* gb = gEb[l].data_ptr<T>();
        if (beta == T(0)) std::fill(gb, gb + n, T(0));
        for (int64_t i = 0; i < B; ++i) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) gb[j] += gp[i * n + j];
        }
      }
    }
  }
  Tensor g_s0 = none;
  if (needs[0]) g_s0 = H && K ? gh + ga : (H ? gh : ga);
  std::vector<Tensor> out{g_s0, gWa, gWb};
  for (int64_t l = 0; want_e && l < L; ++l) {
    out.push_back(gEb[l]);
    out.push_back(gEm[l]);
  }
  return out;
}

std::vector<Tensor> sequence_backward(int64_t kind, bool rnn, bool jslds, const Tensor& s0, const Tensor& Wa,
                                      const c10::optional<Tensor>& Wb, at::TensorList Em, at::TensorList saved,
                                      const Tensor& gFh, const Tensor& gFe, const Tensor& gA, const Tensor& gEo,
                                      c10::List<bool> needs_list, double c_fp, double c_ap) {
  const Tensor& S = saved[0];
  TORCH_CHECK(S.dim() == 3, "sequence kernel: saved[0] must be the stacked rows (T, R, m)");
  const Dims d = make_dims(kind, rnn, jslds, s0, S.narrow(2, s0.size(1), S.size(2) - s0.size(1)),
                           static_cast<int64_t>(Em.size()));
  std::vector<bool> needs;
  for (bool b : needs_list) needs.push_back(b);
  TORCH_CHECK(needs.size() == 4, "sequence kernel: needs is [s0, Wa, Wb, E]");
  // the per-step products read the weights' memory directly: dense copies where they are not
  std::vector<Tensor> em, sv(saved.begin(), saved.end());
  for (const auto& w : Em) em.push_back(w.contiguous());
  const Tensor Wac = Wa.contiguous();
  c10::optional<Tensor> Wbc;
  if (Wb.has_value() && Wb->defined()) Wbc = Wb->contiguous();
  // Incoming gradients are read with their (time, row) strides: the model's (B, T, n) trajectories
  // hand back transposed gradients, whose dense copies cost about 3 % of a paper-size step. Rows
  // must be dense (unit stride over the state), which an expanded gradient (a loss that sums a
  // trajectory) is not: that one is copied.
  auto rows_dense = [](const Tensor& g) { return g.dim() == 3 && (g.size(2) <= 1 || g.stride(2) == 1) ? g : g.contiguous(); };
  const Tensor gFhc = rows_dense(gFh), gFec = rows_dense(gFe), gAc = rows_dense(gA), gEoc = rows_dense(gEo);
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(s0.scalar_type(), "auxfn_jslds_sequence_backward", [&] {
    out = backward_impl<scalar_t>(d, s0.contiguous(), Wac, Wbc, em, sv, gFhc, gFec, gAc, gEoc, needs, c_fp, c_ap);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(auxfn_jslds, m) {
  m.def("release_buffers() -> ()", &release_buffers);
  m.def("sequence_forward(int kind, bool rnn, bool jslds, Tensor s0, Tensor X, Tensor Wa, Tensor? Wb, "
        "Tensor[] Eb, Tensor[] Em) -> Tensor[]");
  m.def("sequence_backward(int kind, bool rnn, bool jslds, Tensor s0, Tensor Wa, Tensor? Wb, Tensor[] Em, "
        "Tensor[] saved, Tensor gFh, Tensor gFe, Tensor gA, Tensor gEo, bool[] needs, float c_fp, float c_ap) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(auxfn_jslds, CPU, m) {
  m.impl("sequence_forward", &sequence_forward);
  m.impl("sequence_backward", &sequence_backward);
}
