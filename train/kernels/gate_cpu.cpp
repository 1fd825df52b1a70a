// Fused CPU kernels for one layer of logic gates: gather + multilinear truth table, forward and
// backward (DESIGN §2.2-2.6). Same math as dlgn.train.functional.GateFunction (the reference);
// the Python side (dlgn/train/kernels/cpu.py) compiles this file once per machine and calls it
// through ctypes, so no Torch headers are needed and the build takes a few seconds.
//
// Layout: activations feature-major [features, batch], the batch contiguous (as everywhere in the
// trainer). Gate g reads rows wiring[g, 0..n-1] of x and evaluates table tables[table_index[g]]
// (several gates may share one table). A gate works on TILE samples at a time: its fold levels
// live in small stack arrays (at most 2**(n-1) x TILE values each) and the inner loops run over
// the tile's lanes, which the compiler vectorises.
//
// Fold order: most significant address bit first, as in the reference:
// t <- t[:h] + p_j * (t[h:] - t[:h]) for j = n-1 .. 0, h = 2**j. The first fold reads the table
// itself (its differences are per-gate constants).
//
// Backward (recompute instead of saving the 2**n fold levels per sample that the reference keeps):
// refold, keeping the differences d = t_hi - t_lo of every level; then expand the output
// gradient down the levels, c_hi = c * p_j, c_lo = c - c_hi, with dL/dp_j = sum_i c_i d_i; the
// table gradient is the batch sum of the last level's c.
//
// Determinism: results never depend on the thread count or on thread timing.
// - Forward: threads take chunks of gates; each output is computed by one fixed sequence of
//   operations.
// - Backward: threads take batch blocks of BLOCK samples (dynamically, so that a thread the OS
//   preempts on a shared machine holds up less). Gate inputs add their gradient straight into
//   x's gradient (a block's columns belong to the thread running it), in gate order. The table
//   gradient of a (gate, block) pair is summed over the block's lanes in a fixed order and
//   stored; a second pass sums the blocks, and the gates sharing a table (CSR, in gate order),
//   in a fixed order.

#include <algorithm>
#include <cstdint>

namespace {

// Full unrolling of the loops over table entries and inputs lets the forward keep its fold in
// registers (-30% time at n = 4). Not in the backward: there it spills and ran 1.5-3x slower
// (and compiled for 18 s instead of 3).
#define DLGN_UNROLL _Pragma("GCC unroll 64")

// Measured on the 2-core AMD EPYC (Zen 4, AVX-512) at 8000 gates x batch 128, n = 2, 4, 6:
// Samples a gate evaluates at once, the width of every stack array. 32 keeps a six-input gate's
// backward (about 100 x TILE values) inside a 32 KiB L1; 16 ran 2x slower, 64 1.5x slower.
constexpr int TILE = 32;
// Samples per backward block: the unit that threads take and that the table gradient is summed
// over before it is stored. Fixed, not derived from the thread count, so that the summation
// order (hence the bits) does not depend on the number of threads. 64 (two tiles) halves the
// per-block horizontal sums against 32 (-15% backward at n = 4) and still gives each of two
// threads one block at batch 128.
constexpr int BLOCK = 64;
// Width of the lane-wise partial sums of the table gradient.
constexpr int REDUCE = 8;
// Gates ahead whose input rows are prefetched (the wiring defeats the hardware prefetchers):
// -25% forward time at n = 4, the backward about even.
constexpr int PREFETCH = 4;
static_assert(TILE % REDUCE == 0 && BLOCK % TILE == 0, "TILE must divide BLOCK, REDUCE must divide TILE");

template <typename T>
inline void prefetch_rows(const T* base, int64_t stride, const int64_t* wiring, int n, int64_t first, int64_t last,
                          int write) {
    constexpr int64_t LINE = 64 / sizeof(T);
    for (int j = 0; j < n; ++j) {
        const T* row = base + wiring[j] * stride;
        for (int64_t b = first; b < last; b += LINE) {
            if (write)
                __builtin_prefetch(row + b, 1, 3);
            else
                __builtin_prefetch(row + b, 0, 3);
        }
    }
}

// Gathers a tile of inputs: p[j][b] = x[wiring[j], b0 + b]; lanes past the batch are zero.
template <typename T, int N>
inline void gather(T (&p)[N][TILE], const T* x, int64_t stride_x, const int64_t* wiring, int64_t b0, int len) {
    DLGN_UNROLL
    for (int j = 0; j < N; ++j) {
        const T* row = x + wiring[j] * stride_x + b0;
        if (len == TILE) {
            for (int b = 0; b < TILE; ++b) p[j][b] = row[b];
        } else {
            for (int b = 0; b < len; ++b) p[j][b] = row[b];
            for (int b = len; b < TILE; ++b) p[j][b] = T(0);
        }
    }
}

template <typename T, int N>
void forward_gates(const T* x, int64_t stride_x, int64_t batch, const int64_t* wiring, int64_t gates,
                   const T* tables, const int64_t* table_index, T* out, int64_t stride_out, int threads) {
    constexpr int E = 1 << N;
    constexpr int H = E / 2;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
    for (int64_t g = 0; g < gates; ++g) {
        if (g + PREFETCH < gates) prefetch_rows(x, stride_x, wiring + (g + PREFETCH) * N, N, 0, batch, 0);
        const T* t = tables + (table_index ? table_index[g] : g) * E;
        T diff[H];
        DLGN_UNROLL
        for (int i = 0; i < H; ++i) diff[i] = t[i + H] - t[i];
        for (int64_t b0 = 0; b0 < batch; b0 += TILE) {
            const int len = static_cast<int>(std::min<int64_t>(TILE, batch - b0));
            T p[N][TILE];
            gather<T, N>(p, x, stride_x, wiring + g * N, b0, len);
            T level[H][TILE];
            DLGN_UNROLL
            for (int i = 0; i < H; ++i)
                for (int b = 0; b < TILE; ++b) level[i][b] = t[i] + p[N - 1][b] * diff[i];
            DLGN_UNROLL
            for (int j = N - 2; j >= 0; --j) {
                const int h = 1 << j;
                DLGN_UNROLL
                for (int i = 0; i < h; ++i)
                    for (int b = 0; b < TILE; ++b)
                        level[i][b] = level[i][b] + p[j][b] * (level[i + h][b] - level[i][b]);
            }
            T* o = out + g * stride_out + b0;
            for (int b = 0; b < len; ++b) o[b] = level[0][b];
        }
    }
}

// grad_x (zeroed by the caller) or nullptr; block_grad [blocks, gates, 2**n] or nullptr.
template <typename T, int N>
void backward_blocks(const T* x, int64_t stride_x, int64_t batch, const int64_t* wiring, int64_t gates,
                     const T* tables, const int64_t* table_index, const T* grad_out, int64_t stride_grad_out,
                     T* grad_x, int64_t stride_grad_x, T* block_grad, int threads) {
    constexpr int E = 1 << N;
    constexpr int H = E / 2;
    const int64_t blocks = (batch + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        // One block's columns of every row belong to the thread running it.
        const int64_t col_first = blk * BLOCK, col_last = std::min(batch, col_first + BLOCK);
        for (int64_t g = 0; g < gates; ++g) {
            if (g + PREFETCH < gates) {
                const int64_t* ahead = wiring + (g + PREFETCH) * N;
                prefetch_rows(x, stride_x, ahead, N, col_first, col_last, 0);
                if (grad_x) prefetch_rows(grad_x, stride_grad_x, ahead, N, col_first, col_last, 1);
            }
            const T* t = tables + (table_index ? table_index[g] : g) * E;
            const int64_t* w = wiring + g * N;
            T diff[H];
            for (int i = 0; i < H; ++i) diff[i] = t[i + H] - t[i];
            // Lane-wise partial sums of the table gradient over the block's tiles:
            // sum_b c_i and sum_b c_i p_{n-1} for the entries i < H of the first fold.
            T acc_c[H][REDUCE] = {};
            T acc_cp[H][REDUCE] = {};
            for (int64_t b0 = col_first; b0 < col_last; b0 += TILE) {
                const int len = static_cast<int>(std::min<int64_t>(TILE, batch - b0));
                T p[N][TILE];
                gather<T, N>(p, x, stride_x, w, b0, len);
                // Up: refold, keeping the differences of folds 1 .. n-1 (the fold over input
                // j < n-1 has 2**j of them, at offset H - 2**(j+1) of d).
                T level[H][TILE];
                T d[H > 1 ? H - 1 : 1][TILE];
                for (int i = 0; i < H; ++i)
                    for (int b = 0; b < TILE; ++b) level[i][b] = t[i] + p[N - 1][b] * diff[i];
                for (int j = N - 2; j >= 0; --j) {
                    const int h = 1 << j;
                    T(*dj)[TILE] = d + (H - 2 * h);
                    for (int i = 0; i < h; ++i)
                        for (int b = 0; b < TILE; ++b) {
                            dj[i][b] = level[i + h][b] - level[i][b];
                            level[i][b] = level[i][b] + p[j][b] * dj[i][b];
                        }
                }
                // Down: c holds dL/d(entries of the current level), 2**(j+1) of them after input j.
                T c[H][TILE];
                T grad_p[N][TILE];
                const T* go = grad_out + g * stride_grad_out + b0;
                if (len == TILE) {
                    for (int b = 0; b < TILE; ++b) c[0][b] = go[b];
                } else {
                    for (int b = 0; b < len; ++b) c[0][b] = go[b];
                    for (int b = len; b < TILE; ++b) c[0][b] = T(0);  // padding adds nothing below
                }
                for (int j = 0; j < N - 1; ++j) {
                    const int h = 1 << j;
                    const T(*dj)[TILE] = d + (H - 2 * h);
                    for (int b = 0; b < TILE; ++b) grad_p[j][b] = c[0][b] * dj[0][b];
                    for (int i = 1; i < h; ++i)
                        for (int b = 0; b < TILE; ++b) grad_p[j][b] += c[i][b] * dj[i][b];
                    for (int i = 0; i < h; ++i)
                        for (int b = 0; b < TILE; ++b) {
                            const T hi = c[i][b] * p[j][b];
                            c[i + h][b] = hi;
                            c[i][b] = c[i][b] - hi;
                        }
                }
                for (int b = 0; b < TILE; ++b) grad_p[N - 1][b] = c[0][b] * diff[0];
                for (int i = 1; i < H; ++i)
                    for (int b = 0; b < TILE; ++b) grad_p[N - 1][b] += c[i][b] * diff[i];
                if (block_grad) {
                    // The last split (over input n-1) is never materialised.
                    for (int i = 0; i < H; ++i)
                        for (int b = 0; b < TILE; b += REDUCE)
                            for (int l = 0; l < REDUCE; ++l) {
                                acc_c[i][l] += c[i][b + l];
                                acc_cp[i][l] += c[i][b + l] * p[N - 1][b + l];
                            }
                }
                if (grad_x) {
                    for (int j = 0; j < N; ++j) {
                        T* gx = grad_x + w[j] * stride_grad_x + b0;
                        for (int b = 0; b < len; ++b) gx[b] += grad_p[j][b];
                    }
                }
            }
            if (block_grad) {
                T* bg = block_grad + (blk * gates + g) * E;
                for (int i = 0; i < H; ++i) {
                    T sum_c = acc_c[i][0], sum_cp = acc_cp[i][0];
                    for (int l = 1; l < REDUCE; ++l) {
                        sum_c += acc_c[i][l];
                        sum_cp += acc_cp[i][l];
                    }
                    bg[i] = sum_c - sum_cp;
                    bg[i + H] = sum_cp;
                }
            }
        }
    }
}

// grad_tables[t] = sum over the gates of table t (CSR table_offsets / table_gates, or gate t
// itself when table_offsets is nullptr), in order, of the sum over blocks, in order.
template <typename T>
void reduce_table_grad(const T* block_grad, int64_t blocks, int64_t gates, int entries, int64_t tables,
                       const int64_t* table_offsets, const int64_t* table_gates, T* grad_tables, int threads) {
    // A few hundred thousand adds: threads only pay off for large layers (and every parallel
    // region waits for its slowest thread, which costs a time slice on a busy machine).
#pragma omp parallel for num_threads(threads) schedule(static) if (blocks * gates * entries > (1 << 21))
    for (int64_t t = 0; t < tables; ++t) {
        T* out = grad_tables + t * entries;
        for (int a = 0; a < entries; ++a) out[a] = T(0);
        const int64_t lo = table_offsets ? table_offsets[t] : t, hi = table_offsets ? table_offsets[t + 1] : t + 1;
        for (int64_t k = lo; k < hi; ++k) {
            const int64_t g = table_gates ? table_gates[k] : k;
            for (int64_t blk = 0; blk < blocks; ++blk) {
                const T* bg = block_grad + (blk * gates + g) * entries;
                for (int a = 0; a < entries; ++a) out[a] += bg[a];
            }
        }
    }
}

// Learned connections (dlgn.train.learned): input slot s of a layer is the weighted mix of C
// candidate rows of x, out[s] = sum_c w[s, c] x[cand[s, c]] (c in order). Forward: threads take
// chunks of slots. Backward: threads take batch blocks as in backward_blocks; the input gradient
// is added in slot and candidate order by the thread owning those columns, and the weight gradient
// of a (slot, candidate, block) is summed over the block's lanes in a fixed order and stored; the
// caller sums the blocks in order.
template <typename T>
void mix_forward(const T* x, int64_t stride_x, int64_t batch, const int64_t* cand, const T* w, int64_t slots,
                 int count, T* out, int64_t stride_out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
    for (int64_t s = 0; s < slots; ++s) {
        if (s + PREFETCH < slots) prefetch_rows(x, stride_x, cand + (s + PREFETCH) * count, count, 0, batch, 0);
        const int64_t* cs = cand + s * count;
        const T* ws = w + s * count;
        T* o = out + s * stride_out;
        for (int64_t b0 = 0; b0 < batch; b0 += TILE) {
            const int len = static_cast<int>(std::min<int64_t>(TILE, batch - b0));
            T acc[TILE];
            const T* r0 = x + cs[0] * stride_x + b0;
            const T w0 = ws[0];
            for (int b = 0; b < len; ++b) acc[b] = w0 * r0[b];
            for (int c = 1; c < count; ++c) {
                const T* r = x + cs[c] * stride_x + b0;
                const T wc = ws[c];
                for (int b = 0; b < len; ++b) acc[b] += wc * r[b];
            }
            for (int b = 0; b < len; ++b) o[b0 + b] = acc[b];
        }
    }
}

// grad_x (zeroed by the caller) or nullptr; block_grad [blocks, slots, count] or nullptr.
template <typename T>
void mix_backward(const T* x, int64_t stride_x, int64_t batch, const int64_t* cand, const T* w, int64_t slots,
                  int count, const T* grad_out, int64_t stride_grad_out, T* grad_x, int64_t stride_grad_x,
                  T* block_grad, int threads) {
    const int64_t blocks = (batch + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t col_first = blk * BLOCK, col_last = std::min(batch, col_first + BLOCK);
        for (int64_t s = 0; s < slots; ++s) {
            if (s + PREFETCH < slots) {
                const int64_t* ahead = cand + (s + PREFETCH) * count;
                if (block_grad) prefetch_rows(x, stride_x, ahead, count, col_first, col_last, 0);
                if (grad_x) prefetch_rows(grad_x, stride_grad_x, ahead, count, col_first, col_last, 1);
            }
            const int64_t* cs = cand + s * count;
            const T* ws = w + s * count;
            const T* go = grad_out + s * stride_grad_out;
            for (int c = 0; c < count; ++c) {
                if (block_grad) {
                    const T* r = x + cs[c] * stride_x;
                    T acc[REDUCE] = {};
                    int64_t b = col_first;
                    for (; b + REDUCE <= col_last; b += REDUCE)
                        for (int l = 0; l < REDUCE; ++l) acc[l] += go[b + l] * r[b + l];
                    for (int l = 0; b < col_last; ++b, ++l) acc[l] += go[b] * r[b];
                    T sum = acc[0];
                    for (int l = 1; l < REDUCE; ++l) sum += acc[l];
                    block_grad[(blk * slots + s) * count + c] = sum;
                }
                if (grad_x) {
                    T* gx = grad_x + cs[c] * stride_grad_x;
                    const T wc = ws[c];
                    for (int64_t b = col_first; b < col_last; ++b) gx[b] += wc * go[b];
                }
            }
        }
    }
}

template <typename T>
int forward_dispatch(int n, const T* x, int64_t stride_x, int64_t batch, const int64_t* wiring, int64_t gates,
                     const T* tables, const int64_t* table_index, T* out, int64_t stride_out, int threads) {
    switch (n) {
#define DLGN_CASE(N) \
    case N: forward_gates<T, N>(x, stride_x, batch, wiring, gates, tables, table_index, out, stride_out, threads); \
        return 0;
        DLGN_CASE(1) DLGN_CASE(2) DLGN_CASE(3) DLGN_CASE(4) DLGN_CASE(5) DLGN_CASE(6)
#undef DLGN_CASE
    }
    return 1;
}

template <typename T>
int backward_dispatch(int n, const T* x, int64_t stride_x, int64_t batch, const int64_t* wiring, int64_t gates,
                      const T* tables, const int64_t* table_index, const T* grad_out, int64_t stride_grad_out,
                      T* grad_x, int64_t stride_grad_x, T* block_grad, int threads) {
    switch (n) {
#define DLGN_CASE(N) \
    case N: backward_blocks<T, N>(x, stride_x, batch, wiring, gates, tables, table_index, grad_out, \
                                  stride_grad_out, grad_x, stride_grad_x, block_grad, threads); \
        return 0;
        DLGN_CASE(1) DLGN_CASE(2) DLGN_CASE(3) DLGN_CASE(4) DLGN_CASE(5) DLGN_CASE(6)
#undef DLGN_CASE
    }
    return 1;
}

}  // namespace

extern "C" {

int dlgn_block() { return BLOCK; }

#define DLGN_EXPORT(SUFFIX, T)                                                                                    \
    int dlgn_gate_forward_##SUFFIX(int n, const T* x, int64_t stride_x, int64_t batch, const int64_t* wiring,     \
                                   int64_t gates, const T* tables, const int64_t* table_index, T* out,           \
                                   int64_t stride_out, int threads) {                                            \
        return forward_dispatch<T>(n, x, stride_x, batch, wiring, gates, tables, table_index, out, stride_out,    \
                                   threads);                                                                     \
    }                                                                                                            \
    int dlgn_gate_backward_##SUFFIX(int n, const T* x, int64_t stride_x, int64_t batch, const int64_t* wiring,    \
                                    int64_t gates, const T* tables, const int64_t* table_index,                  \
                                    const T* grad_out, int64_t stride_grad_out, T* grad_x,                       \
                                    int64_t stride_grad_x, T* block_grad, int threads) {                         \
        return backward_dispatch<T>(n, x, stride_x, batch, wiring, gates, tables, table_index, grad_out,          \
                                    stride_grad_out, grad_x, stride_grad_x, block_grad, threads);                \
    }                                                                                                            \
    void dlgn_table_grad_##SUFFIX(const T* block_grad, int64_t blocks, int64_t gates, int entries,                \
                                  int64_t tables, const int64_t* table_offsets, const int64_t* table_gates,      \
                                  T* grad_tables, int threads) {                                                 \
        reduce_table_grad<T>(block_grad, blocks, gates, entries, tables, table_offsets, table_gates,              \
                             grad_tables, threads);                                                              \
    }                                                                                                            \
    void dlgn_mix_forward_##SUFFIX(const T* x, int64_t stride_x, int64_t batch, const int64_t* cand, const T* w, \
                                   int64_t slots, int count, T* out, int64_t stride_out, int threads) {          \
        mix_forward<T>(x, stride_x, batch, cand, w, slots, count, out, stride_out, threads);                     \
    }                                                                                                            \
    void dlgn_mix_backward_##SUFFIX(const T* x, int64_t stride_x, int64_t batch, const int64_t* cand,           \
                                    const T* w, int64_t slots, int count, const T* grad_out,                     \
                                    int64_t stride_grad_out, T* grad_x, int64_t stride_grad_x, T* block_grad,    \
                                    int threads) {                                                               \
        mix_backward<T>(x, stride_x, batch, cand, w, slots, count, grad_out, stride_grad_out, grad_x,            \
                        stride_grad_x, block_grad, threads);                                                     \
    }

DLGN_EXPORT(f32, float)
DLGN_EXPORT(f64, double)

}  // extern "C"
