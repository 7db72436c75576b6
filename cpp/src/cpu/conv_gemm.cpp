#include "conv_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>

#include "../core/backend.h"
#include "elements.h"
#include "finite_rows.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "row_shuffles.h"
#include "streaming.h"
#include "thread_pool.h"
#include "transpose.h"

namespace convt::cpu {
namespace {

// Depth of one packed slice: a kMr x kKc weight panel (12 KB) fits L1. 512 rather than 256: the
// 512-channel forwards then keep each tap's sum in registers, one kernel call a tap (one thread:
// dcgan_g2 23.6-24.5 -> 22.2-23.4 ms, hifigan_up1 45-51 -> 45-48 ms; two threads, hifigan_up1
// 24.5-25.0 -> 22.3-23.6 ms, dcgan_g2 within noise).
constexpr int kKc = 512;
constexpr int kMaxBlock = 128;  // pixels per forward/dX task: 8 register columns
// ... and for layers of few weights whose kernel reaches past the stride (see block_columns).
constexpr int kMaxWideBlock = 512;
constexpr int64_t kWideBlockMaxWeights = 16 * 1024;  // a group's weights, floats
constexpr int64_t kBatchFloats = 48 * 1024;       // packed pixels of one batch of taps: L2-resident
constexpr int64_t kFootprintFloats = 256 * 1024;  // largest block footprint (1 MB)
// dX of this size or more, written in place from tiles of rows that start mid-line: tiles
// outer (see backward_data_gemm).
constexpr int64_t kTilesOuterBytes = 4 << 20;
constexpr int64_t kLineBytes = 64;
constexpr int kFetchAhead = 8;  // footprint rows prefetched this many channels ahead
// Most cache lines a Prefetcher fetches between two kernel calls (more wait on the misses
// already in flight).
constexpr int kFetchBurst = 64;
constexpr int kCompactInPlaceTiles = 12;
constexpr int kTileMajorDepth = 16;  // dX weights this few outputs deep: tile-major
// Few-output dW: source pixels a slice (whole rows, at least one); its B takes 64 bytes a pixel
// and panel of 16 columns (48 KB for dcgan_out's three).
constexpr int64_t kTapsSlicePixels = 256;
// dW slices: as many whole source rows as keep their packed X and dY rows within this many
// bytes (about the L2; each register tile's sums are loaded once a slice: dcgan_g2 dW 25.5-27.9
// -> 22.4-23.0 ms on one thread against 512 KB, other layers unchanged).
constexpr int64_t kWeightSliceBytes = 1024 * 1024;
// dW row ranges (see backward_weights_gemm): at most kRowRanges of at least kRowsPerRange source
// rows, for layers whose per-range partials (all groups) stay under kRowSplitMaxWeights floats.
constexpr int kRowRanges = 8;
constexpr int64_t kRowsPerRange = 16;
constexpr int64_t kRowSplitMaxWeights = 512 * 1024;
// GEMM dW reads float dY in place (the strided-segment kernel) for at most this many panels of
// input channels (NCHW dY; channels-contiguous dY, whose packing is plain copies, the second),
// else packs it. In-process A/B, in place against packed, two threads, NCHW: grp4_k4s2 (1 panel)
// 0.74x the time, fcn8s 0.86x, dil2 0.90x (2), unet_up2 0.84x (4), vae_dec 0.95-0.96x (8);
// unet_up1 1.07x (16), dcgan_g2 1.14x, hifigan_up1 1.31x (32: each tile's rows read again for
// every panel, at stride 8 a line a step). NHWC: grp4 0.80x, fcn8s 0.77x, unet_up2 0.95x,
// dil2 0.97x, vae_dec 1.05x. One thread: grp4 0.73x, dil2 0.92x, unet_up2 0.89x, fcn8s 0.93x.
constexpr int kMaxInPlaceAPanels = 8;
constexpr int kMaxInPlaceAPanelsNhwc = 4;

// Offsets are relative to a view's first element and may be negative (reversed strides).
constexpr int64_t kMissing = INT64_MIN;  // a tap that reaches no pixel: reads zero

// The cache lines of [p, p + bytes) into L2 (a short row's, which the hardware prefetchers
// would not fetch ahead).
inline void prefetch_bytes(const void* p, int64_t bytes) {
    const char* from = static_cast<const char*>(p);
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(from + b, 0, 2);
    __builtin_prefetch(from + bytes - 1, 0, 2);
}

// Byte ranges a thread will read next, fetched a few cache lines at a time between kernel
// calls, so that memory is read while the FMA units work.
class Prefetcher {
 public:
    void clear() { ranges_.clear(), at_ = 0, line_ = 0, lines_ = 0; }
    void add(const void* p, int64_t bytes) {
        const auto first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
        const auto end = reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes);
        if (bytes > 0) ranges_.push_back({first, end}), lines_ += int64_t((end - first + 63) / 64);
    }
    // Lines fetched each pump(): the ranges spread over `calls` calls.
    void spread(int64_t calls) {
        rate_ = static_cast<int>(
            std::clamp<int64_t>(ceil_div(lines_, std::max<int64_t>(calls, 1)), 1, kFetchBurst));
        lines_ = 0;
    }
    bool idle() const { return at_ >= ranges_.size(); }
    void pump() {
        for (int k = 0; k < rate_ && at_ < ranges_.size(); ++k) {
            const uintptr_t line = ranges_[at_].first + line_;
            __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);
            line_ += 64;
            if (ranges_[at_].first + line_ >= ranges_[at_].second) ++at_, line_ = 0;
        }
    }

 private:
    std::vector<std::pair<uintptr_t, uintptr_t>> ranges_;
    size_t at_ = 0;
    uintptr_t line_ = 0;
    int64_t lines_ = 0;
    int rate_ = 1;
};

// The thread's Prefetcher while it has lines queued, else null: kernel loops pump it only then,
// and layers that queue nothing (most) pay a test of a register a kernel call.
inline Prefetcher* queued_fetch() {
    Prefetcher& fetch = thread_scratch<Prefetcher>();
    return fetch.idle() ? nullptr : &fetch;
}

// CONVT_POISON_SCRATCH's tagged NaN (a payload no arithmetic or test input makes), and
// whether v[0, n) still holds one: a buffer element that no copy or zero reached.
inline float poison_value() {
    const uint32_t bits = 0x7fc0deadu;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}
inline bool holds_poison(const float* v, int64_t n) {
    const float tag = poison_value();
    for (int64_t i = 0; i < n; ++i)
        if (std::memcmp(v + i, &tag, sizeof tag) == 0) return true;
    return false;
}

inline int tiles_of(int n, int tile) { return static_cast<int>(ceil_div(n, tile)); }

// A tensor read as a GEMM operand: channel c of pixel j is element offset[j] + c * channel_stride.
struct Gathered {
    const void* base;
    int32_t type;
    int64_t channel_stride;
};

template <typename E>
inline float to_float(E v) {
    if constexpr (std::is_same_v<E, uint16_t>)
        return detail::half_to_float(v);
    else
        return v;
}

// Channels [c0, c0 + depth) of kNr pixels first, first + step, ..., packed [depth][kNr].
template <typename E>
void pack_run_typed(const E* base, int64_t cs, int64_t first, int64_t step, int c0, int depth,
                    float* out) {
    if constexpr (std::is_same_v<E, uint16_t>) {  // fp16: gather the bits, convert 16 at once
        uint16_t bits[kNr];
        for (int c = 0; c < depth; ++c) {
            const uint16_t* s = base + first + int64_t(c0 + c) * cs;
            if (step != 1) {
                for (int j = 0; j < kNr; ++j) bits[j] = s[j * step];
                s = bits;
            }
            halves_to_floats(s, kNr, out + c * kNr);
        }
        return;
    }
    if (step == 1) {  // NCHW rows: a contiguous run per channel
        for (int c = 0; c < depth; ++c) {
            const E* s = base + first + int64_t(c0 + c) * cs;
            for (int j = 0; j < kNr; ++j) out[c * kNr + j] = to_float(s[j]);
        }
        return;
    }
    for (int c = 0; c < depth; ++c) {
        const E* s = base + first + int64_t(c0 + c) * cs;
        for (int j = 0; j < kNr; ++j) out[c * kNr + j] = to_float(s[j * step]);
    }
}

// The same for pixels at arbitrary offsets; kMissing reads zeros.
template <typename E>
void pack_columns_typed(const E* base, int64_t cs, const int64_t* off, int c0, int depth,
                        float* out) {
    for (int c = 0; c < depth; ++c) {
        float* o = out + c * kNr;
        const int64_t co = int64_t(c0 + c) * cs;
        if constexpr (std::is_same_v<E, uint16_t>) {
            uint16_t bits[kNr];  // half +0 where a tap misses
            for (int j = 0; j < kNr; ++j) bits[j] = off[j] == kMissing ? 0 : base[off[j] + co];
            halves_to_floats(bits, kNr, o);
        } else {
            for (int j = 0; j < kNr; ++j)
                o[j] = off[j] == kMissing ? 0.f : to_float(base[off[j] + co]);
        }
    }
}

void pack_run(const Gathered& g, int64_t first, int64_t step, int c0, int depth, float* out) {
    if (g.type == CONVT_TYPE_F16)
        pack_run_typed(static_cast<const uint16_t*>(g.base), g.channel_stride, first, step, c0,
                       depth, out);
    else
        pack_run_typed(static_cast<const float*>(g.base), g.channel_stride, first, step, c0, depth,
                       out);
}

void pack_columns(const Gathered& g, const int64_t* off, int c0, int depth, float* out) {
    if (g.type == CONVT_TYPE_F16)
        pack_columns_typed(static_cast<const uint16_t*>(g.base), g.channel_stride, off, c0, depth,
                           out);
    else
        pack_columns_typed(static_cast<const float*>(g.base), g.channel_stride, off, c0, depth,
                           out);
}

// Where the B operand's columns come from. Taps form a grid (tap rows x tap columns); column j
// reads, for tap (a, b), element base[j] + row_delta[a] + col_delta[b] of the tensor when
// row_lo[j] <= a <= row_hi[j] and col_lo[j] <= b <= col_hi[j], and zeros otherwise.
struct TapGrid {
    std::vector<int> ids;  // [a][b]: the tap's index in the weights
    std::vector<int64_t> row_delta, col_delta;
};

struct Columns {
    std::vector<int64_t> base;
    std::vector<int32_t> row_lo, row_hi, col_lo, col_hi;
    // Per register column (kNr columns): the taps every one of its columns reaches, and the step
    // between their bases when it is constant (else kMissing): such a tap is one strided run.
    std::vector<int32_t> all_row_lo, all_row_hi, all_col_lo, all_col_hi;
    std::vector<int64_t> step;
    void reset(int cols) {  // every column empty
        base.assign(cols, 0);
        row_lo.assign(cols, 0);
        row_hi.assign(cols, -1);
        col_lo.assign(cols, 0);
        col_hi.assign(cols, -1);
    }
    void summarize(int cols) {
        const int panels = cols / kNr;
        all_row_lo.resize(panels);
        all_row_hi.resize(panels);
        all_col_lo.resize(panels);
        all_col_hi.resize(panels);
        step.resize(panels);
        for (int j = 0; j < panels; ++j) {
            const int f = j * kNr, l = f + kNr;
            all_row_lo[j] = *std::max_element(&row_lo[f], &row_lo[0] + l);
            all_row_hi[j] = *std::min_element(&row_hi[f], &row_hi[0] + l);
            all_col_lo[j] = *std::max_element(&col_lo[f], &col_lo[0] + l);
            all_col_hi[j] = *std::min_element(&col_hi[f], &col_hi[0] + l);
            const int64_t d = base[f + 1] - base[f];
            bool uniform = true;
            for (int k = 2; k < kNr && uniform; ++k) uniform = base[f + k] == base[f] + k * d;
            step[j] = uniform ? d : kMissing;
        }
    }
};

// Taps of a few channels each (a tile's weights tap after tap: a_tap_step == depth * kMr) over
// a compact source in which every register column is a run that reaches every tap: the kernel
// reads B in place through one offset per (tap, channel), the whole tap list one call a tile and
// panel, with neither packing nor a segment per tap (fsrcnn's dX: 81 taps of one channel each).
// Rows [0, rows) of c (ldc apart) get the sums, added to them or, with `overwrite`, replacing
// them; rows past `rows` in the last tile are not written. Panels outer (each panel's B read
// once), or with `tiles_outer` tiles outer (each of c's rows written front to back). False
// (nothing done) when the block does not qualify.
bool indirect_taps(const Gathered& src, const TapGrid& grid, const Columns& columns, int cols,
                   int depth, const float* a, int64_t a_tap_step, int64_t a_tile_step, int tiles,
                   float* c, int64_t ldc, int rows, bool overwrite, bool tiles_outer = false) {
    if (src.type != CONVT_TYPE_F32 || a_tap_step != int64_t(depth) * kMr) return false;
    const int panels = cols / kNr;
    const int ncol = static_cast<int>(grid.col_delta.size());
    const int nrow = static_cast<int>(grid.row_delta.size());
    bool every = true;
    for (int j = 0; j < panels && every; ++j)
        every = columns.step[j] == 1 && columns.all_row_lo[j] == 0 &&
                columns.all_row_hi[j] == nrow - 1 && columns.all_col_lo[j] == 0 &&
                columns.all_col_hi[j] == ncol - 1;
    thread_local std::vector<int64_t> offsets;
    offsets.clear();
    for (int ta = 0; ta < nrow && every; ++ta)
        for (int tb = 0; tb < ncol && every; ++tb) {
            // A is one run only if the grid's ids count up from the first
            every = grid.ids[ta * ncol + tb] == grid.ids[0] + ta * ncol + tb;
            for (int ch = 0; ch < depth; ++ch)
                offsets.push_back(grid.row_delta[ta] + grid.col_delta[tb] +
                                  int64_t(ch) * src.channel_stride);
        }
    if (!every) return false;
    const IndirectKernel ik = indirect_kernel();
    // The last tile of rows % kMr rows, where the CPU has a short-tile kernel: those rows alone,
    // over a few panels at once (grp4's dX: 16 rows, tiles of 6, 6 and 4).
    const ShortIndirectKernel sk = short_indirect_kernel();
    const float* a0 = a + grid.ids[0] * a_tap_step;
    const int n = static_cast<int>(offsets.size());
    Prefetcher* const fetch = queued_fetch();
    auto product = [&](int o, int j) {  // tile o, panel j
        if (fetch) fetch->pump();
        const float* b = static_cast<const float*>(src.base) + columns.base[j * kNr];
        float* to = c + int64_t(o) * kMr * ldc + j * kNr;
        const int valid = std::min(kMr, rows - o * kMr);
        if (valid == kMr) return ik(a0 + o * a_tile_step, offsets.data(), n, b, to, ldc, overwrite);
        if (sk)
            return short_indirect_run(
                sk, a0 + o * a_tile_step, offsets.data(), n, valid, j, panels,
                [&](int q) { return static_cast<const float*>(src.base) + columns.base[q * kNr]; },
                to, ldc, overwrite);
        float tile[kMr * kNr];  // the last tile's padding rows stay here
        // Read in only to add to: overwritten rows may be dX's own, not yet touched (their
        // loads were 40% of this function on grp4's dX).
        for (int i = 0; i < valid && !overwrite; ++i)
            std::copy_n(to + i * ldc, kNr, tile + i * kNr);
        ik(a0 + o * a_tile_step, offsets.data(), n, b, tile, kNr, overwrite);
        for (int i = 0; i < valid; ++i) std::copy_n(tile + i * kNr, kNr, to + i * ldc);
    };
    for (int u = 0; u < tiles * panels; ++u) {
        if (tiles_outer)
            product(u / panels, u % panels);
        else
            product(u % tiles, u / tiles);
    }
    return true;
}

// c[tiles * kMr][cols] += sum over the grid's taps of A(tap) x B(tap), B(tap) gathered as
// `columns` says; A(tap) of tile o = a + id * a_tap_step + o * a_tile_step is packed
// [depth][kMr]. Rows [rows, tiles * kMr) of c (the last tile's padding) may be left unsummed.
// Taps are packed in batches of up to kBatchFloats; each register tile then runs through the
// whole batch (kKc-deep segments) before it is stored. Taps that reach no column are skipped.
void accumulate_taps(const Gathered& src, const TapGrid& grid, const Columns& columns, int cols,
                     int depth, const float* a, int64_t a_tap_step, int64_t a_tile_step, int tiles,
                     int rows, float* c, std::vector<float>& packed, bool compact = false) {
    const MicroKernel uk = micro_kernel();
    // The last tile of rows % kMr rows by the short-tile kernel where the CPU has one (its
    // padding rows of c are then left as they are).
    const ShortTileKernel short_tile = short_tile_kernel();
    const int short_rows = short_tile && rows < tiles * kMr ? rows - (tiles - 1) * kMr : 0;
    const int panels = cols / kNr;
    const int64_t slice = int64_t(std::min(depth, kKc)) * cols;  // floats of one segment
    const int64_t per_batch = std::max<int64_t>(1, kBatchFloats / slice);
    packed.resize(static_cast<size_t>(slice * per_batch));
    // Few register tiles reuse each B panel little, so a fp32 run of contiguous pixels is read in
    // place, a tensor row per channel, instead of being copied first (dcgan_out forward 7.0 ->
    // 4.7 ms on one thread; from three tiles up, copying wins: dil2, unet_up2). A compact source
    // (a block's footprint, copied once) is read in place up to 12 tiles (dil2 forward 10.5 ->
    // 8.6 ms, s1_same 24 -> 22); beyond, each panel's lines, spread by the channel stride, cost
    // more than a copy (unet_up1).
    const bool in_place =
        (tiles <= 2 || (compact && tiles <= kCompactInPlaceTiles)) && src.type == CONVT_TYPE_F32;
    // Taps a few channels deep (dcgan_out's dX: 3, fsrcnn's: 1) make segments of a few steps,
    // each a restart of the kernel's loop. When a tile's weights lie tap after tap (a_tap_step
    // is one tap's panel), packed B is laid out the same way within each register column, so
    // taps of consecutive ids run as one segment (the same products in the same order).
    const bool merge = !in_place && depth <= kKc && a_tap_step == int64_t(depth) * kMr;
    struct Packed {
        const float* a;  // tile 0's panel
        int64_t b;       // offset in `packed`
        int depth, id;
    };
    thread_local std::vector<Packed> batch;
    thread_local std::vector<const float*> direct;  // [entry][panel]: in-place B, else null
    thread_local std::vector<Segment> segments;
    Prefetcher* const fetch = queued_fetch();
    auto run = [&] {
        if (merge) {  // runs of consecutive taps, one segment each
            segments.clear();
            for (size_t s = 0; s < batch.size(); ++s) {
                if (s > 0 && batch[s].id == batch[s - 1].id + 1) {
                    segments.back().depth += depth;
                    continue;
                }
                segments.push_back({batch[s].a, packed.data() + int64_t(s) * depth * kNr, depth});
            }
            const int64_t panel_stride = per_batch * depth * kNr;
            for (int o = 0; o < tiles; ++o) {
                if (fetch) fetch->pump();
                if (short_rows && o == tiles - 1) {
                    short_tile(segments.data(), int(segments.size()), int64_t(o) * a_tile_step, 0,
                               panel_stride, short_rows, panels, c + int64_t(o) * kMr * cols, cols,
                               false);
                    continue;
                }
                for (int j = 0; j < panels; ++j)
                    uk(segments.data(), int(segments.size()), int64_t(o) * a_tile_step,
                       int64_t(j) * panel_stride, c + int64_t(o) * kMr * cols + j * kNr, cols,
                       false);
            }
            batch.clear();
            direct.clear();
            return;
        }
        // Panel by panel, every tile: one panel's B (18 KB for dil2's dX, read in place) stays
        // in L1 while the tiles' weights stream in order.
        segments.resize(batch.size());
        for (int j = 0; j < panels; ++j) {
            for (size_t s = 0; s < batch.size(); ++s) {
                const float* d = direct[s * panels + j];
                segments[s] =
                    d ? Segment{batch[s].a, d, batch[s].depth, src.channel_stride}
                      : Segment{batch[s].a,
                                packed.data() + batch[s].b + int64_t(j) * batch[s].depth * kNr,
                                batch[s].depth};
            }
            for (int o = 0; o < tiles; ++o) {
                if (fetch) fetch->pump();
                if (short_rows && o == tiles - 1)  // one panel: its segments are the panel's
                    short_tile(segments.data(), int(batch.size()), int64_t(o) * a_tile_step, 0, 0,
                               short_rows, 1, c + int64_t(o) * kMr * cols + j * kNr, cols, false);
                else
                    uk(segments.data(), int(batch.size()), int64_t(o) * a_tile_step, 0,
                       c + int64_t(o) * kMr * cols + j * kNr, cols, false);
            }
        }
        batch.clear();
        direct.clear();
    };
    const int32_t rmin = *std::min_element(columns.row_lo.begin(), columns.row_lo.end());
    const int32_t rmax = *std::max_element(columns.row_hi.begin(), columns.row_hi.end());
    const int32_t cmin = *std::min_element(columns.col_lo.begin(), columns.col_lo.end());
    const int32_t cmax = *std::max_element(columns.col_hi.begin(), columns.col_hi.end());
    const int ncol = static_cast<int>(grid.col_delta.size());
    const int nrow = static_cast<int>(grid.row_delta.size());
    if (compact && indirect_taps(src, grid, columns, cols, depth, a, a_tap_step, a_tile_step, tiles,
                                 c, cols, rows, false))
        return;
    int64_t off[kNr];
    batch.clear();
    for (int ta = std::max(rmin, 0); ta <= std::min(rmax, nrow - 1); ++ta)
        for (int tb = std::max(cmin, 0); tb <= std::min(cmax, ncol - 1); ++tb) {
            const int64_t delta = grid.row_delta[ta] + grid.col_delta[tb];
            for (int c0 = 0; c0 < depth; c0 += kKc) {
                const int kc = std::min(kKc, depth - c0);
                if (int64_t(batch.size()) == per_batch) run();
                const int64_t at = int64_t(batch.size()) * slice;
                for (int j = 0; j < panels; ++j) {
                    float* out =
                        packed.data() +
                        (merge ? (int64_t(j) * per_batch + int64_t(batch.size())) * kc * kNr
                               : at + int64_t(j) * kc * kNr);
                    const float* in_tensor = nullptr;
                    if (columns.step[j] != kMissing && ta >= columns.all_row_lo[j] &&
                        ta <= columns.all_row_hi[j] && tb >= columns.all_col_lo[j] &&
                        tb <= columns.all_col_hi[j]) {
                        const int64_t first = columns.base[j * kNr] + delta;
                        if (in_place && columns.step[j] == 1)
                            in_tensor = static_cast<const float*>(src.base) + first +
                                        int64_t(c0) * src.channel_stride;
                        else
                            pack_run(src, first, columns.step[j], c0, kc, out);
                        direct.push_back(in_tensor);
                        continue;
                    }
                    direct.push_back(nullptr);
                    for (int k = 0, col = j * kNr; k < kNr; ++k, ++col)
                        off[k] = ta >= columns.row_lo[col] && ta <= columns.row_hi[col] &&
                                         tb >= columns.col_lo[col] && tb <= columns.col_hi[col]
                                     ? columns.base[col] + delta
                                     : kMissing;
                    pack_columns(src, off, c0, kc, out);
                }
                const int id = grid.ids[ta * ncol + tb];
                batch.push_back({a + id * a_tap_step + int64_t(c0) * kMr, at, kc, id});
            }
        }
    if (!batch.empty()) run();
}

// Pixels per task: the largest register-column multiple up to kMaxBlock that still gives every
// thread a few tasks. Up to kMaxWideBlock for a group's weights of at most kWideBlockMaxWeights
// floats and a kernel that reaches past the stride: each block then builds a footprint of rows
// that the next block builds again, and sets up its tiles, for little work a pixel, which wider
// blocks spread further (in-process A/B, 512 against 128 pixels: dX grp4 0.91x the time,
// fsrcnn 0.91x, dcgan_out 0.97x; forward grp4 0.94x, dcgan_out and dil2 0.98x). Not for more
// weights (vae_dec forward 1.20x, unet_up1 dX 1.18x, fcn8s 1.10x: the block's operands outgrow
// the caches), nor a kernel the size of the stride (unet_up2 dX 1.09x: no rows overlap).
template <typename TasksFor>
int block_columns(const ConvtParams& p, int64_t group_weights, const TasksFor& tasks_for) {
    const int64_t want = 4 * int64_t(ThreadPool::instance().num_threads());
    const bool overlap = int64_t(p.dilation_y) * (p.kernel_h - 1) + 1 > p.stride_y ||
                         int64_t(p.dilation_x) * (p.kernel_w - 1) + 1 > p.stride_x;
    int cols = overlap && group_weights <= kWideBlockMaxWeights ? kMaxWideBlock : kMaxBlock;
    while (cols > kNr && tasks_for(cols) < want) cols /= 2;
    return cols;
}

// Runs tasks [0, count) on the pool in units of `group` consecutive ones (tasks that go
// together). With `ahead`, units of up to 8 groups, while every thread still gets 8 units or
// more, and before task t runs, next(t + 1, fetch) queues on `fetch` what the unit's next task
// will read: fetched a few lines a kernel call while task t's products run.
template <typename Next, typename Task>
void run_units(int64_t count, int64_t group, bool ahead, const Next& next, const Task& task) {
    const int64_t threads = ThreadPool::instance().num_threads();
    const int64_t per_unit =
        group * (ahead ? std::clamp<int64_t>(count / group / (8 * threads), 1, 8) : 1);
    ThreadPool::instance().parallel_for(ceil_div(count, per_unit), [&](int64_t u) {
        Prefetcher& fetch = thread_scratch<Prefetcher>();
        struct Done {  // nothing left queued for the thread's next kernel calls, whatever ends
            Prefetcher& f;
            ~Done() { f.clear(); }
        } done{fetch};
        const int64_t end = std::min(count, (u + 1) * per_unit);
        for (int64_t t = u * per_unit; t < end; ++t) {
            fetch.clear();
            if (ahead && t + 1 < end) next(t + 1, fetch);
            task(t);
        }
    });
}

// Walks pixels (n, y, x) of an h x w box image by image, row by row, from flat index `first`:
// one division to start, increments after (divisions per pixel cost more than the packing).
struct PixelCursor {
    int64_t h, w, n, y, x;
    PixelCursor(int64_t first, int64_t h_, int64_t w_) : h(h_), w(w_) {
        n = first / (h * w);
        y = (first / w) % h;
        x = first % w;
    }
    void next() {
        if (++x < w) return;
        x = 0;
        if (++y < h) return;
        y = 0;
        ++n;
    }
};

void write_gradient_row(float* out, const float* c, int n, bool accumulate) {
    for (int i = 0; i < n; ++i) out[i] = accumulate ? out[i] + c[i] : c[i];
}

// dW operand packing: channels [ch0, ch1) of `count` pixels -> out[tile][pixel][ch % width],
// tiles `tile_stride` floats apart (count * width when 0); channels past `channels` and pixels
// at kMissing give zeros. Pixel-major within a tile, so `width` channel streams advance
// together and every write is contiguous.
template <typename E>
void pack_rows_typed(const E* s, int64_t cs, const int64_t* off, int count, int ch0, int ch1,
                     int channels, int width, int64_t tile_stride, float* out) {
    if (tile_stride == 0) tile_stride = int64_t(count) * width;
    if (cs == 1) {
        // Channels contiguous (NHWC): pixel by pixel, its run (fp16: converted at once) split
        // into the tiles, whole tiles by copies of a constant size (a call to memcpy a tile of 6
        // channels was half of unet_up2's NHWC dW: 1.35x faster, unet_up1 1.14x, vae_dec 1.12x).
        auto copy = [&](float* o, const float* from, int real) {
            if (real == kMr && width == kMr)
                std::memcpy(o, from, sizeof(float) * kMr);
            else if (real == kNr && width == kNr)
                std::memcpy(o, from, sizeof(float) * kNr);
            else
                for (int j = 0; j < width; ++j) o[j] = j < real ? from[j] : 0.f;
        };
        const int have = std::max(0, std::min(ch1, channels) - ch0);  // channels read a pixel
        thread_local std::vector<float> floats;  // fp16: a pixel's run as floats
        floats.resize(static_cast<size_t>(have));
        for (int k = 0; k < count; ++k) {
            const float* px = nullptr;  // channel ch0's float
            if (off[k] == kMissing) {
            } else if constexpr (std::is_same_v<E, uint16_t>) {
                halves_to_floats(s + off[k] + ch0, have, floats.data());
                px = floats.data();
            } else {
                px = s + off[k] + ch0;
            }
            for (int t0 = ch0; t0 < ch1; t0 += width) {
                float* o = out + int64_t((t0 - ch0) / width) * tile_stride + int64_t(k) * width;
                if (px)
                    copy(o, px + (t0 - ch0), std::max(0, std::min(width, channels - t0)));
                else
                    std::fill_n(o, width, 0.f);
            }
        }
        return;
    }
    for (int t0 = ch0; t0 < ch1; t0 += width) {
        float* o = out + int64_t((t0 - ch0) / width) * tile_stride;
        const int real = std::max(0, std::min(width, channels - t0));
        for (int k = 0; k < count; ++k, o += width) {
            // Eight pixels one or two elements apart (NCHW rows): 8 x 8 transposes (fp16:
            // of each channel's run converted to floats first; gathered a pixel's channels
            // at a time, fp16 dW was 1.3-2.9x slower: dil2, vae_dec, unet_up2, grp4).
            const int64_t step = k + 8 <= count ? off[k + 1] - off[k] : 0;
            bool run = (step == 1 || step == 2) && off[k] != kMissing;
            for (int i = 2; i < 8 && run; ++i) run = off[k + i] == off[k] + i * step;
            if (run) {
                // As many further groups of 8 as continue the run; then 8 channels at a
                // time along all of it: NCHW planes 4 KB apart share an L1 set, and 16
                // channel lines at once overflowed its 8 ways (a fifth of dcgan_out's dW).
                int end = k + 8;
                while (end + 8 <= count && off[end] == off[k] + int64_t(end - k) * step) {
                    bool more = true;
                    for (int i = 1; i < 8 && more; ++i) more = off[end + i] == off[end] + i * step;
                    if (!more) break;
                    end += 8;
                }
                // Each channel's run is fetched kFetchAhead channels ahead: eight short
                // streams a group leave the hardware prefetchers too little to go on
                // (in-process A/B, dW: vae_dec 0.93x, unet_up2 0.94x, dil2 0.96x).
                const int64_t bytes = (int64_t(end - 1 - k) * step + 1) * int64_t(sizeof(E));
                const int fetch_end = std::min(ch1, channels);
                thread_local std::vector<float> runs;  // fp16: [8 channels][end - k]
                for (int j = 0; j < real; j += 8) {
                    for (int c = t0 + j + kFetchAhead;
                         c < std::min(t0 + j + kFetchAhead + 8, fetch_end); ++c)
                        prefetch_bytes(s + off[k] + int64_t(c) * cs, bytes);
                    const int nc = std::min(8, real - j);
                    if constexpr (std::is_same_v<E, uint16_t>) {
                        runs.resize(size_t(8) * (end - k));
                        for (int c = 0; c < nc; ++c)
                            load_row(s, CONVT_TYPE_F16, off[k] + int64_t(t0 + j + c) * cs, step,
                                     end - k, runs.data() + int64_t(c) * (end - k));
                        for (int kk = k; kk < end; kk += 8)
                            transpose8(runs.data() + (kk - k), end - k, 1, nc,
                                       o + int64_t(kk - k) * width + j, width);
                    } else {
                        for (int kk = k; kk < end; kk += 8)
                            transpose8(s + off[kk] + int64_t(t0 + j) * cs, cs, step, nc,
                                       o + int64_t(kk - k) * width + j, width);
                    }
                }
                for (int i = 0; i < end - k; ++i)
                    for (int j = real; j < width; ++j) o[i * width + j] = 0.f;
                o += int64_t(end - k - 1) * width;
                k = end - 1;
                continue;
            }
            if (off[k] == kMissing) {
                std::fill_n(o, width, 0.f);
                continue;
            }
            const E* px = s + off[k] + int64_t(t0) * cs;
            if constexpr (std::is_same_v<E, uint16_t>) {
                uint16_t bits[kNr];  // width <= kNr
                for (int j = 0; j < real; ++j) bits[j] = px[j * cs];
                halves_to_floats(bits, real, o);
            } else {
                for (int j = 0; j < real; ++j) o[j] = to_float(px[j * cs]);
            }
            for (int j = real; j < width; ++j) o[j] = 0.f;
        }
    }
}

void pack_rows(const Gathered& src, const int64_t* off, int count, int ch0, int ch1, int channels,
               int width, float* out, int64_t tile_stride = 0) {
    if (src.type == CONVT_TYPE_F16)
        pack_rows_typed(static_cast<const uint16_t*>(src.base), src.channel_stride, off, count, ch0,
                        ch1, channels, width, tile_stride, out);
    else
        pack_rows_typed(static_cast<const float*>(src.base), src.channel_stride, off, count, ch0,
                        ch1, channels, width, tile_stride, out);
}

// Stretches of consecutive destination elements among a block's pixels: [first, first + count)
// with offset[j + 1] == offset[j] + 1 inside (an NCHW row at stride 1; pixels one by one
// otherwise). Built in place by emplace_back: a braced push_back went through the stack (two
// 4-byte stores read back as one 8-byte load, which stalls: find_runs took 7.7% of grp4's NHWC
// forward).
struct Run {
    Run(int f, int c) : first(f), count(c) {}
    int first, count;
};

void find_runs(const int64_t* offset, int n, std::vector<Run>& runs) {
    runs.clear();
    for (int j = 0; j < n;) {
        int k = j + 1;  // run j goes on while the offsets step by one
        while (k < n && offset[k] == offset[k - 1] + 1) ++k;
        runs.emplace_back(j, k - j);
        j = k;
    }
}

template <typename E>
void copy_runs(E* d, const int64_t* offset, const std::vector<Run>& runs, const E* row,
               bool stream = false) {
    for (const Run& r : runs) {
        if (r.count == 1)
            d[offset[r.first]] = row[r.first];
        else if constexpr (std::is_same_v<E, float>) {
            if (stream)
                stream_floats(row + r.first, r.count, d + offset[r.first]);
            else
                std::memcpy(d + offset[r.first], row + r.first, sizeof(E) * size_t(r.count));
        } else {
            std::memcpy(d + offset[r.first], row + r.first, sizeof(E) * size_t(r.count));
        }
    }
}

// dst[offset[j] + co] = row[j] for j < n, a run at a time (element by element, 1 ns each,
// took as long as the multiply-adds on dcgan_out's dX), in the tensor's element type (fp16
// converted n at a time); float runs streamed to memory with `stream`.
void scatter_row(void* dst, int32_t type, const int64_t* offset, const std::vector<Run>& runs,
                 int64_t co, const float* row, int n, bool stream = false) {
    if (type == CONVT_TYPE_F32) {
        copy_runs(static_cast<float*>(dst) + co, offset, runs, row, stream);
    } else if (type == CONVT_TYPE_F16) {
        thread_local std::vector<uint16_t> bits;
        bits.resize(static_cast<size_t>(n));
        floats_to_halves(row, n, bits.data());
        copy_runs(static_cast<uint16_t*>(dst) + co, offset, runs, bits.data());
    } else {
        for (int j = 0; j < n; ++j) store<float>(dst, type, offset[j] + co, row[j]);
    }
}

// Columns [j, j + m) of c's rows [0, rows) (ldc apart), pixel-major: out[k * rows + h] =
// c[h * ldc + j + k], by 8x8 transposes when m is 8.
void pixel_runs(const float* c, int64_t ldc, int j, int m, int rows, float* out) {
    int h = 0;
    for (; m == 8 && h + 8 <= rows; h += 8)
        transpose8(c + int64_t(h) * ldc + j, ldc, 1, 8, out + h, rows);
    for (; h < rows; ++h)
        for (int k = 0; k < m; ++k) out[int64_t(k) * rows + h] = c[h * ldc + j + k];
}

// Rows [0, rows) of c (ldc apart), row ch to dst[offset[j] + ch * channel_stride] for j < n (as
// scatter_row, row by row). Channels contiguous in float32 (NHWC): 8 channels of 8 pixels
// evenly spaced are one 8 x 8 transpose, each pixel's 8 channels one store (row by row, every
// element was a store to its own line: a quarter of unet_up2's NHWC forward).
void scatter_tile(void* dst, int32_t type, const int64_t* offset, const std::vector<Run>& runs,
                  int64_t channel_stride, const float* c, int64_t ldc, int rows, int n,
                  bool stream = false) {
    int ch = 0;
    if (type == CONVT_TYPE_F16 && channel_stride == 1) {
        // Channels contiguous in fp16: each pixel's channels put together in floats (8x8
        // transposes, 8 pixels at a time), then converted and stored as one run (channel row by
        // row, every element was a 2-byte store of its own: 43% of dcgan_out's fp16 NHWC dX;
        // fp16 NHWC: dcgan_out dX 1.54x faster, fsrcnn_x3 dX 1.20x, unet_up2 forward 1.19x).
        auto* d = static_cast<uint16_t*>(dst);
        thread_local std::vector<float> pixels;
        pixels.resize(size_t(8) * rows);
        for (int j = 0; j < n; j += 8) {
            const int m = std::min(8, n - j);
            pixel_runs(c, ldc, j, m, rows, pixels.data());
            for (int k = 0; k < m; ++k)
                floats_to_halves(pixels.data() + size_t(k) * rows, rows, d + offset[j + k]);
        }
        return;
    }
    if (type == CONVT_TYPE_F32 && channel_stride == 1) {
        float* d = static_cast<float*>(dst);
        // Channels [h, h + 8) of pixels from j: 8 of them when evenly spaced, else one. The
        // pixels done.
        auto eight = [&](int j, int h) {
            const int64_t step = j + 8 <= n ? offset[j + 1] - offset[j] : 0;
            bool even = step >= 8 || step <= -8;  // stores of 8 channels do not overlap
            for (int k = 2; k < 8 && even; ++k) even = offset[j + k] == offset[j] + k * step;
            if (even) {
                transpose8(c + int64_t(h) * ldc + j, ldc, 1, 8, d + offset[j] + h, step);
                return 8;
            }
            for (int k = 0; k < 8; ++k) d[offset[j] + h + k] = c[(h + k) * ldc + j];
            return 1;
        };
        const int whole = rows / 8 * 8;
        // Pixels that follow each other whole (dX of a dense NHWC layer): pixel by pixel, each
        // one's channels in order, the block written front to back (NHWC dX: fsrcnn_x3 1.10x
        // faster, dcgan_out 1.07x). Else 8 channels at a time across the pixels (pixel by pixel
        // was 0.97x on unet_up2's forward, whose phase pixels lie a pixel apart).
        const bool dense = n >= 2 && whole > 0 && rows == whole && offset[1] - offset[0] == rows;
        if (dense && stream) {
            // Streamed (outputs past the caches): 8 pixels at a time (else one) put together in
            // a buffer, then written out in whole lines, none read in first (NHWC dX:
            // fsrcnn_x3 1.13x faster, unet_up2 1.10x, unet_up1 1.02x).
            thread_local std::vector<float> run;
            run.resize(size_t(8) * rows);
            for (int j = 0; j < n;) {
                bool even = j + 8 <= n;
                for (int k = 1; k < 8 && even; ++k) even = offset[j + k] == offset[j] + k * rows;
                const int count = even ? 8 : 1;
                pixel_runs(c, ldc, j, count, rows, run.data());
                stream_floats(run.data(), int64_t(count) * rows, d + offset[j]);
                j += count;
            }
        } else if (dense) {
            for (int j = 0, done = 0; j < n; j += done)
                for (int h = 0; h < whole; h += 8) done = eight(j, h);
        } else {
            for (int h = 0; h < whole; h += 8)
                for (int j = 0; j < n;) j += eight(j, h);
        }
        ch = whole;
    }
    for (; ch < rows; ++ch)
        scatter_row(dst, type, offset, runs, ch * channel_stride, c + ch * ldc, n, stream);
}

}  // namespace

void pack_gemm_weights(const detail::PreparedWeights& pw, GemmWeights& out) {
    out.take_shape(pw);
    const int og = out.out_per_group, ig = out.in_per_group, taps = out.taps;
    out.out_tiles = tiles_of(og, kMr);
    out.in_tiles = tiles_of(ig, kMr);
    out.forward.assign(size_t(out.groups) * taps * out.out_tiles * kMr * ig, 0.f);
    out.backward.assign(size_t(out.groups) * taps * out.in_tiles * kMr * og, 0.f);
    const bool tile_major = og <= kTileMajorDepth;
    out.backward_tap_step = tile_major ? int64_t(og) * kMr : int64_t(out.in_tiles) * og * kMr;
    out.backward_tile_step = tile_major ? int64_t(taps) * og * kMr : int64_t(og) * kMr;
    for (int64_t oc = 0; oc < pw.out_channels; ++oc) {
        const int64_t g = oc / og, ocl = oc % og;
        for (int64_t t = 0; t < taps; ++t)
            for (int64_t icl = 0; icl < ig; ++icl) {
                const auto v = static_cast<float>(pw.values[(oc * taps + t) * ig + icl]);
                const int64_t fwd = (((g * taps + t) * out.out_tiles + ocl / kMr) * ig + icl);
                out.forward[fwd * kMr + ocl % kMr] = v;
                const int64_t bwd = g * taps * out.in_tiles * og * kMr + t * out.backward_tap_step +
                                    icl / kMr * out.backward_tile_step + ocl * kMr + icl % kMr;
                out.backward[bwd] = v;
            }
    }
    pack_epilogue(pw, out.bias, out.slopes);
}

void pack_epilogue(const detail::PreparedWeights& pw, std::vector<float>& bias,
                   std::vector<float>& slopes) {
    bias.assign(static_cast<size_t>(pw.out_channels), 0.f);
    for (size_t i = 0; i < pw.bias.size(); ++i) bias[i] = static_cast<float>(pw.bias[i]);
    slopes.clear();
    if (pw.neuron.type == NeuronType::PReLU)
        slopes.assign(pw.neuron.data.begin(), pw.neuron.data.end());
}

namespace {
// Register tiles over a group's stacked rows (every tap's output channels).
int stacked_tiles(const GemmWeights& w) { return tiles_of(w.taps * w.out_per_group, kMr); }

const float* stacked_weights(const GemmWeights& w) {
    std::call_once(w.stacked_once, [&w] {
        const int og = w.out_per_group, ig = w.in_per_group, tiles = stacked_tiles(w);
        w.stacked.assign(size_t(w.groups) * tiles * ig * kMr, 0.f);
        for (int64_t g = 0; g < w.groups; ++g)
            for (int64_t t = 0; t < w.taps; ++t)
                for (int64_t ocl = 0; ocl < og; ++ocl) {
                    const int64_t row = t * og + ocl;  // its place in `forward`, then stacked
                    const float* from = w.forward.data() + ocl % kMr +
                                        ((g * w.taps + t) * w.out_tiles + ocl / kMr) * ig * kMr;
                    float* to = w.stacked.data() + row % kMr + (g * tiles + row / kMr) * ig * kMr;
                    for (int64_t icl = 0; icl < ig; ++icl) to[icl * kMr] = from[icl * kMr];
                }
    });
    return w.stacked.data();
}

bool float_images(const ConvtParams& p) {
    return p.src_type != CONVT_TYPE_F64 && p.dst_type != CONVT_TYPE_F64 && !p.accumulate_half;
}
}  // namespace

// Below these channel counts a register tile is mostly padding; the row paths serve them. (Three
// output channels fill half a tile and still beat the row path: dcgan_out forward 8.9 -> 7.8 ms
// and dW 5.5 -> 3.7 ms on one thread.)
bool forward_gemm_fits(const ConvtParams& p) { return float_images(p) && p.out_per_group >= 3; }
bool backward_data_gemm_fits(const ConvtParams& p) {
    return float_images(p) && p.in_per_group >= 8;
}
bool backward_weights_gemm_fits(const ConvtParams& p) {
    return float_images(p) && p.out_per_group >= 3 && p.in_per_group >= 8;
}

namespace {

// The tensor a block of GEMM columns reads: element (n, c, y, x) at base + n * stride_n +
// c * stride_c + y * stride_h + x * stride_w, inside for 0 <= y < h and 0 <= x < w.
struct Plane {
    const void* data;
    int32_t type;
    int64_t base, stride_n, stride_c, stride_h, stride_w, h, w;
};

// A block's footprint: the rows and columns its pixels reach through the taps, copied once for
// every tap into a channel-major float buffer with zeros outside the tensor. Pixel (n, qy, qx)
// of a q-grid reads tap (a, b) at row qy * sy + oy[a], column qx * sx + ox[b] (a forward phase:
// sy = sx = 1; dX: the layer's stride); columns are stored split by phase mod sx, so each tap
// is one fixed offset for every pixel, and a run of pixels along a q-row is a run of the
// buffer, read in place (ldb = the channel stride) or copied from there. Gathering every tap's
// pixels from the tensor instead read each line once per tap, from channel planes a power of
// two apart that share L1 sets: a third of dil2's forward.
class Footprint {
 public:
    // Column strides it splits cheaply (2: with AVX2 shuffles). Larger ones go phase by phase;
    // packed from there, they were slower than gathering from the tensor (fcn8s dX 42 -> 51
    // ms), read in place through offsets (accumulate_taps' indirect kernel), faster.
    static bool splits(int64_t sx) { return sx == 1 || sx == 2; }
    // For pixels [first, first + count) of an qh x qw grid; false (nothing built) when the
    // buffer would exceed kFootprintFloats.
    bool build(const Plane& t, int channels, int64_t qh, int64_t qw, int64_t sy, int64_t sx,
               const std::vector<int64_t>& oy, const std::vector<int64_t>& ox, int64_t first,
               int count) {
        const auto [y_min, y_max] = std::minmax_element(oy.begin(), oy.end());
        const auto [x_min, x_max] = std::minmax_element(ox.begin(), ox.end());
        oy0_ = *y_min, ox0_ = *x_min, sy_ = sy, sx_ = sx;
        const PixelCursor a(first, qh, qw), b(first + count - 1, qh, qw);
        const int64_t columns = (qw - 1) * sx + (*x_max - ox0_) + 1;
        phase_width_ = ceil_div(columns, sx);
        row_ = phase_width_ * sx;
        images_.clear();
        int64_t rows = 0;
        for (int64_t n = a.n; n <= b.n; ++n) {
            const int64_t lo = n == a.n ? a.y : 0, hi = n == b.n ? b.y : qh - 1;
            images_.push_back({n, lo, rows});
            rows += (hi - lo) * sy + (*y_max - oy0_) + 1;
        }
        stride_ = (rows * row_ + 15) / 16 * 16;
        if (stride_ % 512 == 0) stride_ += 16;  // channel planes off each other's L1 sets
        if (int64_t(channels) * stride_ > kFootprintFloats) return false;
        data_.resize(static_cast<size_t>(int64_t(channels) * stride_));
        if (poison_)  // tests: a buffer element the copy or the zeros miss reads as NaN
            std::fill(data_.begin(), data_.end(), std::numeric_limits<float>::quiet_NaN());
        const int64_t x_lo = std::clamp<int64_t>(-ox0_, 0, columns);  // columns inside the tensor
        const int64_t x_hi = std::clamp<int64_t>(t.w - ox0_, x_lo, columns);
        // Rows are short (a block's width) and each channel's lies a plane away: the hardware
        // prefetchers leave every row's first lines to wait on memory. Each channel's row is
        // fetched into L2 kFetchAhead channels ahead, the first ones as a row starts.
        const bool fetch = t.type == CONVT_TYPE_F32 && t.stride_w == 1;
        // Channels contiguous (NHWC float32): a row's pixels gathered 8 channels at a time.
        const bool by_pixel = t.type == CONVT_TYPE_F32 && t.stride_c == 1 && t.stride_w != 1;
        const int64_t bytes = (x_hi - x_lo) * int64_t(sizeof(float));
        for (size_t i = 0; i < images_.size(); ++i) {
            const int64_t end = i + 1 < images_.size() ? images_[i + 1].row : rows;
            for (int64_t r = images_[i].row; r < end; ++r) {
                const int64_t y = images_[i].qy * sy + oy0_ + (r - images_[i].row);
                const bool inside = y >= 0 && y < t.h && x_lo < x_hi;
                // The copy writes every element of a row that spans the tensor's columns;
                // a row that does not gets zeros in the others alone (a whole row's memset was
                // 4% of grp4's dX).
                const bool whole = inside && x_lo == 0 && x_hi == row_;
                const int64_t at = t.base + images_[i].n * t.stride_n + y * t.stride_h +
                                   (ox0_ + x_lo) * t.stride_w;
                auto prefetch_row = [&](int c) {
                    prefetch_bytes(static_cast<const float*>(t.data) + at + c * t.stride_c, bytes);
                };
                if (fetch && inside)
                    for (int c = 1; c < std::min(kFetchAhead, channels); ++c) prefetch_row(c);
                for (int c = 0; c < channels; ++c) {
                    float* row = data_.data() + c * stride_ + r * row_;
                    if (fetch && inside && c + kFetchAhead < channels)
                        prefetch_row(c + kFetchAhead);
                    if (!inside) {
                        std::fill_n(row, row_, 0.f);
                        continue;
                    }
                    if (!whole) {  // the few columns past the tensor's edges
                        zero_columns(row, 0, x_lo);
                        zero_columns(row, x_hi, row_);
                    }
                    if (by_pixel && c % 8 == 0 && c + 8 <= channels)
                        gather8(t, at + c, x_hi - x_lo);
                    if (by_pixel && c / 8 * 8 + 8 <= channels)
                        place_row(floats_.data() + c % 8 * (x_hi - x_lo), x_lo, x_hi, row);
                    else
                        copy_row(t, at + c * t.stride_c, x_lo, x_hi, row);
                }
            }
        }
        return true;
    }
    // The tensor lines a build() of the same arguments would read, in the order it reads them,
    // queued on `fetch` (rows or pixels contiguous; else none).
    static void plan(const Plane& t, int channels, int64_t qh, int64_t qw, int64_t sy, int64_t sx,
                     const std::vector<int64_t>& oy, const std::vector<int64_t>& ox, int64_t first,
                     int count, Prefetcher& fetch) {
        const int64_t size = type_bytes(t.type);
        if (t.stride_w != 1 && t.stride_c != 1) return;
        const auto [y_min, y_max] = std::minmax_element(oy.begin(), oy.end());
        const auto [x_min, x_max] = std::minmax_element(ox.begin(), ox.end());
        const int64_t x0 = std::max<int64_t>(*x_min, 0);
        const int64_t x1 = std::min<int64_t>((qw - 1) * sx + *x_max + 1, t.w);
        if (x0 >= x1) return;
        const PixelCursor a(first, qh, qw), b(first + count - 1, qh, qw);
        const char* data = static_cast<const char*>(t.data);
        for (int64_t n = a.n; n <= b.n; ++n) {
            const int64_t lo = (n == a.n ? a.y : 0) * sy + *y_min;
            const int64_t hi = (n == b.n ? b.y : qh - 1) * sy + *y_max;
            for (int64_t y = std::max<int64_t>(lo, 0); y <= std::min(hi, t.h - 1); ++y) {
                const int64_t at = t.base + n * t.stride_n + y * t.stride_h + x0 * t.stride_w;
                if (t.stride_w == 1)
                    for (int c = 0; c < channels; ++c)
                        fetch.add(data + (at + c * t.stride_c) * size, (x1 - x0) * size);
                else
                    fetch.add(data + at * size, ((x1 - x0 - 1) * t.stride_w + channels) * size);
            }
        }
    }
    // Where pixel (n, qy, qx) of the block reads when oy and ox are at their least; a tap adds
    // row_delta + col_delta.
    int64_t base(int64_t n, int64_t qy, int64_t qx) const {
        for (const Image& im : images_)
            if (im.n == n) return (im.row + (qy - im.qy) * sy_) * row_ + qx;
        return 0;  // not reached: every pixel of the block lies in one of the images
    }
    int64_t row_delta(int64_t oy) const { return (oy - oy0_) * row_; }
    int64_t col_delta(int64_t ox) const {
        return (ox - ox0_) % sx_ * phase_width_ + (ox - ox0_) / sx_;
    }
    Gathered source() const { return {data_.data(), CONVT_TYPE_F32, stride_}; }
    void set_poison(bool on) { poison_ = on; }

 private:
    struct Image {
        int64_t n, qy, row;  // image, its first q-row in the block, its first buffer row
    };
    // Zeros in columns [x0, x1) of a footprint row (each in its phase's part).
    void zero_columns(float* row, int64_t x0, int64_t x1) const {
        for (int64_t x = x0; x < x1; ++x) row[x % sx_ * phase_width_ + x / sx_] = 0.f;
    }
    // Channels contiguous: 8 channels of `count` pixels from tensor element `at` (channel 0,
    // column x_lo) into floats_ ([channel][count]; strided element by element, these rows were
    // 41% of grp4's NHWC dX).
    void gather8(const Plane& t, int64_t at, int64_t count) {
        floats_.resize(static_cast<size_t>(8 * count));
        gather_channels(static_cast<const float*>(t.data) + at, t.stride_w, count, 8,
                        floats_.data(), count);
    }
    // Columns [x_lo, x_hi) of a footprint row from tensor element `at` (column x_lo) on, each
    // to its phase's part of `row`.
    void copy_row(const Plane& t, int64_t at, int64_t x_lo, int64_t x_hi, float* row) {
        const int64_t count = x_hi - x_lo;
        const float* in = static_cast<const float*>(t.data) + at;
        if (t.type == CONVT_TYPE_F16) {  // bits gathered, converted a row at once (F16C)
            const uint16_t* h = static_cast<const uint16_t*>(t.data) + at;
            if (t.stride_w != 1) {
                bits_.resize(static_cast<size_t>(count));
                for (int64_t x = 0; x < count; ++x) bits_[x] = h[x * t.stride_w];
                h = bits_.data();
            }
            floats_.resize(static_cast<size_t>(count));
            halves_to_floats(h, static_cast<int>(count), floats_.data());
            in = floats_.data();
        } else if (t.type != CONVT_TYPE_F32 || t.stride_w != 1) {
            floats_.resize(static_cast<size_t>(count));
            for (int64_t x = 0; x < count; ++x)
                floats_[x] = load<float>(t.data, t.type, at + x * t.stride_w);
            in = floats_.data();
        }
        place_row(in, x_lo, x_hi, row);
    }
    // Floats in[0, x_hi - x_lo) as columns [x_lo, x_hi) of a footprint row, each to its phase's
    // part of `row`.
    void place_row(const float* in, int64_t x_lo, int64_t x_hi, float* row) const {
        if (sx_ == 1) {
            std::memcpy(row + x_lo, in, sizeof(float) * (x_hi - x_lo));
            return;
        }
        int64_t x = x_lo;
        if (sx_ == 2) {
            if (x % 2) row[phase_width_ + x / 2] = *in++, ++x;  // odd first column
            deinterleave2(in, x_hi - x, row + x / 2, row + phase_width_ + x / 2);
            return;
        }
        // Phase by phase: a strided read to a run of the row, no division per element.
        for (int64_t r = 0; r < sx_; ++r) {
            const int64_t x0 = x + pos_mod(r - x, sx_);  // the first column of phase r
            float* out = row + r * phase_width_ + x0 / sx_;
            for (int64_t at = x0; at < x_hi; at += sx_) *out++ = in[at - x];
        }
    }
    std::vector<Image> images_;
    std::vector<float> data_, floats_;  // floats_: a row converted to float first
    std::vector<uint16_t> bits_;
    int64_t oy0_ = 0, ox0_ = 0, sy_ = 1, sx_ = 1, phase_width_ = 0, row_ = 0, stride_ = 0;
    bool poison_ = false;  // CONVT_POISON_SCRATCH
};

}  // namespace

void forward_gemm(const ConvtParams& p, const GemmWeights& w, const void* src, void* dst) {
    const int og = p.out_per_group, ig = p.in_per_group;
    const int64_t n_images = p.num_images;
    std::vector<Phase> ys, xs;
    for (int64_t r = 0; r < std::min<int64_t>(p.stride_y, p.clip_h); ++r)
        ys.push_back(phase_of(r, p.stride_y, p.clip_h, p.first_tap_y, p.dilation_y, p.kernel_h));
    for (int64_t r = 0; r < std::min<int64_t>(p.stride_x, p.clip_w); ++r)
        xs.push_back(phase_of(r, p.stride_x, p.clip_w, p.first_tap_x, p.dilation_x, p.kernel_w));
    if (ys.empty() || xs.empty() || n_images == 0) return;
    const bool poison = detail::poison_scratch();

    // When every phase has the same q-grid, block f of each covers the same source pixels: one
    // footprint, over every phase's taps, serves the whole unit (fcn8s built it 64 times).
    bool share = true;
    for (const Phase& ph : ys) share = share && ph.count == ys[0].count;
    for (const Phase& ph : xs) share = share && ph.count == xs[0].count;
    // Kernels the size of the stride (unet's 2x2 at stride 2): each phase takes one tap, and
    // all of them read the same source pixels. The phases then stack into one GEMM of taps x og
    // rows against one B: its panels packed once a block, not once a phase, one short tile in
    // all, one block setup (in-process A/B: unet_up2 forward 1.22x faster, NHWC 1.14x, fp16
    // 1.14x; unet_up1 1.07x, NHWC 1.05x).
    bool stacked = share && ys.size() * xs.size() >= 2 && ys.size() == size_t(p.kernel_h) &&
                   xs.size() == size_t(p.kernel_w);
    for (const Phase& ph : ys)
        stacked = stacked && ph.taps.size() == 1 && ph.first_source == ys[0].first_source;
    for (const Phase& ph : xs)
        stacked = stacked && ph.taps.size() == 1 && ph.first_source == xs[0].first_source;
    const int tiles = stacked ? stacked_tiles(w) : w.out_tiles;
    const int c_rows = stacked ? w.taps * og : og;  // C's rows, bias og apart
    const float* const weights = stacked ? stacked_weights(w) : w.forward.data();
    const int64_t group_weights = int64_t(stacked ? 1 : w.taps) * tiles * ig * kMr;

    const int64_t most = n_images * ys[0].count * xs[0].count;  // phase 0 is the largest
    auto tasks_for = [&](int cols) { return ceil_div(most, cols) * p.groups; };
    const int cols = block_columns(p, int64_t(w.taps) * og * ig, tasks_for);
    struct Task {
        int g, ry, rx;
        int64_t first;
    };
    // Block f of every phase covers about the same destination rows, and one thread runs them
    // all, one after another: each cache line of the result is written by one core while it is
    // cached (phases interleave within lines; split between cores, the lines would bounce).
    std::vector<Task> tasks;
    std::vector<size_t> task_groups;  // first task of each thread's unit of work
    // Channels-contiguous outputs (NHWC): a unit takes block f of every group, one group after
    // another, so one thread writes each pixel's channels while its lines are cached (grp4's
    // 16-channel runs of a misaligned row share lines with the next group's: unit by group,
    // those lines were read from memory once a group; NHWC forward 1.24x faster), while the
    // blocks alone still make a few units a thread.
    const bool all_groups =
        p.dst_stride_c == 1 && p.groups > 1 &&
        ceil_div(most, cols) >= int64_t(4) * ThreadPool::instance().num_threads();
    for (int g0 = 0; g0 < (all_groups ? 1 : p.groups); ++g0)
        for (int64_t f = 0; f < most; f += cols) {
            task_groups.push_back(tasks.size());
            for (int g = g0; g < (all_groups ? p.groups : g0 + 1); ++g)
                for (size_t ry = 0; ry < (stacked ? 1 : ys.size()); ++ry)
                    for (size_t rx = 0; rx < (stacked ? 1 : xs.size()); ++rx)
                        if (f < n_images * ys[ry].count * xs[rx].count)
                            tasks.push_back({g, int(ry), int(rx), f});
        }
    task_groups.push_back(tasks.size());

    auto all_sources = [](const std::vector<Phase>& phases) {
        std::vector<int64_t> all;
        for (const Phase& ph : phases)
            all.insert(all.end(), ph.first_source.begin(), ph.first_source.end());
        return all;
    };
    const std::vector<int64_t> oy_all = all_sources(ys), ox_all = all_sources(xs);

    // A destination row's x-phases interleave element by element, so each phase alone stores
    // one element at a time (a fifth of unet_up2's forward). When every phase has the same
    // q-grid and rows are contiguous, a unit keeps each x-phase's result of a row phase and
    // stores them together, a whole destination run at a time.
    const bool weave_rows =
        share && xs.size() >= 2 && p.dst_stride_w == 1 && float_or_half(p.dst_type);
    // Float outputs larger than the caches are streamed to memory (unet_up2: 67 MB, each line
    // otherwise read in before it is written), woven rows, or, channels contiguous (NHWC), the
    // x-phases' pixels woven, so a block's destination pixels follow each other (whole, with
    // one group) and are streamed front to back (NHWC forward: unet_up2 1.04x faster,
    // unet_up1 1.02-1.05x; not streamed, woven pixels were 0.97x on vae_dec's 8 MB).
    const bool large =
        p.dst_type == CONVT_TYPE_F32 &&
        n_images * p.groups * og * p.clip_h * p.clip_w * int64_t(sizeof(float)) >= kStreamBytes;
    const bool weave_pixels =
        large && share && xs.size() >= 2 && !weave_rows && p.dst_stride_c == 1;
    const bool weave = weave_rows || weave_pixels;
    const bool stream = weave && large;

    const Gathered source{src, p.src_type, p.src_stride_c};
    const auto ntype = static_cast<NeuronType>(p.neuron);
    // The woven store of row phase py of the block at `first` (n_images * py.count * xs[0].count
    // pixels from there, real of them), x-phase rx's rows from phase_c[rx] on, cols apart.
    auto store_woven = [&](int g, const Phase& py, int64_t first, int real,
                           const float* const* phase_c) {
        const int sx = static_cast<int>(xs.size());
        const int64_t qw = xs[0].count;
        thread_local std::vector<const float*> rows;
        thread_local std::vector<float> woven_row;
        thread_local std::vector<uint16_t> bits;
        rows.resize(size_t(sx));
        PixelCursor at(first, py.count, qw);
        for (int j = 0; j < real;) {
            const int len = static_cast<int>(std::min<int64_t>(real - j, qw - at.x));
            const int64_t o = p.dst_base + at.n * p.dst_stride_n +
                              int64_t(g) * og * p.dst_stride_c +
                              (p.clip_y + py.r + int64_t(p.stride_y) * at.y) * p.dst_stride_h +
                              p.clip_x + int64_t(sx) * at.x;
            for (int oc = 0; oc < og; ++oc) {
                for (int r = 0; r < sx; ++r) rows[r] = phase_c[r] + int64_t(oc) * cols + j;
                const int64_t at_oc = o + int64_t(oc) * p.dst_stride_c;
                if (p.dst_type == CONVT_TYPE_F32 && !stream) {
                    interleave(rows.data(), sx, len, static_cast<float*>(dst) + at_oc);
                } else if (p.dst_type == CONVT_TYPE_F32 && sx == 2 &&
                           interleave2_stream(rows[0], rows[1], 2 * int64_t(len),
                                              static_cast<float*>(dst) + at_oc)) {
                    // Woven straight into the output where it starts 16-byte aligned, not into
                    // a row buffer copied out by stream_floats.
                } else if (p.dst_type == CONVT_TYPE_F32) {
                    woven_row.resize(size_t(sx) * len);
                    interleave(rows.data(), sx, len, woven_row.data());
                    stream_floats(woven_row.data(), int64_t(woven_row.size()),
                                  static_cast<float*>(dst) + at_oc);
                } else {
                    woven_row.resize(size_t(sx) * len);
                    bits.resize(woven_row.size());
                    interleave(rows.data(), sx, len, woven_row.data());
                    floats_to_halves(woven_row.data(), int64_t(woven_row.size()), bits.data());
                    std::memcpy(static_cast<uint16_t*>(dst) + at_oc, bits.data(),
                                sizeof(uint16_t) * bits.size());
                }
            }
            j += len;
            for (int k = 0; k < len; ++k) at.next();
        }
    };
    // store_woven for channels-contiguous pixels: the x-phases' results interleaved pixel by
    // pixel (woven[oc][sx * j + rx]), then stored as one tile of sx * real pixels.
    auto store_woven_pixels = [&](int g, const Phase& py, int64_t first, int real,
                                  const float* const* phase_c) {
        const int sx = static_cast<int>(xs.size());
        const int wide = sx * real;
        thread_local std::vector<float> woven;
        thread_local std::vector<int64_t> offsets;
        thread_local std::vector<Run> runs;
        thread_local std::vector<const float*> rows;
        woven.resize(size_t(og) * wide);
        offsets.resize(size_t(wide));
        rows.resize(size_t(sx));
        for (int oc = 0; oc < og; ++oc) {
            for (int r = 0; r < sx; ++r) rows[r] = phase_c[r] + int64_t(oc) * cols;
            interleave(rows.data(), sx, real, woven.data() + int64_t(oc) * wide);
        }
        PixelCursor at(first, py.count, xs[0].count);
        for (int j = 0; j < real; ++j, at.next()) {
            const int64_t o = p.dst_base + at.n * p.dst_stride_n + int64_t(g) * og +
                              (p.clip_y + py.r + int64_t(p.stride_y) * at.y) * p.dst_stride_h +
                              (p.clip_x + int64_t(sx) * at.x) * p.dst_stride_w;
            for (int r = 0; r < sx; ++r) offsets[size_t(sx) * j + r] = o + r * p.dst_stride_w;
        }
        find_runs(offsets.data(), wide, runs);
        scatter_tile(dst, p.dst_type, offsets.data(), runs, 1, woven.data(), wide, og, wide,
                     stream);
    };
    // Where group g's destination pixel (n, qy, qx) of phases py and px lies.
    auto dst_offset = [&](int g, const Phase& py, const Phase& px, int64_t n, int64_t qy,
                          int64_t qx) {
        return p.dst_base + n * p.dst_stride_n + int64_t(g) * og * p.dst_stride_c +
               (p.clip_y + py.r + int64_t(p.stride_y) * qy) * p.dst_stride_h +
               (p.clip_x + px.r + int64_t(p.stride_x) * qx) * p.dst_stride_w;
    };
    // A stacked block's results (c: the rows of tap t from t * og on, cols apart), phase by
    // phase: woven by row phase, or scattered.
    auto store_stacked = [&](int g, int64_t first, int real, const float* c) {
        thread_local std::vector<const float*> phase_c;
        thread_local std::vector<int64_t> offsets;
        thread_local std::vector<Run> runs;
        phase_c.resize(xs.size());
        for (const Phase& py : ys) {
            for (size_t rx = 0; rx < xs.size(); ++rx)
                phase_c[rx] = c + int64_t(py.taps[0] * p.kernel_w + xs[rx].taps[0]) * og * cols;
            if (weave_pixels) {
                store_woven_pixels(g, py, first, real, phase_c.data());
                continue;
            }
            if (weave) {
                store_woven(g, py, first, real, phase_c.data());
                continue;
            }
            offsets.resize(size_t(real));
            for (size_t rx = 0; rx < xs.size(); ++rx) {
                PixelCursor at(first, py.count, xs[rx].count);
                for (int j = 0; j < real; ++j, at.next())
                    offsets[j] = dst_offset(g, py, xs[rx], at.n, at.y, at.x);
                find_runs(offsets.data(), real, runs);
                scatter_tile(dst, p.dst_type, offsets.data(), runs, p.dst_stride_c, phase_c[rx],
                             cols, og, real);
            }
        }
    };
    // Group g's source, where footprints are built from.
    auto source_plane = [&](int g) -> Plane {
        return {src,
                p.src_type,
                p.src_base + int64_t(g) * ig * p.src_stride_c,
                p.src_stride_n,
                p.src_stride_c,
                p.src_stride_h,
                p.src_stride_w,
                p.src_h,
                p.src_w};
    };
    // shared_ready: the unit's shared footprint is built (reset at each unit and group).
    auto run_task = [&](const Task& t, bool& shared_ready) {
        const Phase& py = ys[t.ry];
        const Phase& px = xs[t.rx];
        const int real =
            static_cast<int>(std::min<int64_t>(cols, n_images * py.count * px.count - t.first));
        thread_local TapGrid grid;
        thread_local Columns columns;
        thread_local std::vector<int64_t> dst_offsets;
        thread_local std::vector<Run> runs;
        thread_local std::vector<float> plain, packed;
        thread_local std::vector<std::vector<float>> phase_c;  // weave: per x-phase
        if (weave) phase_c.resize(xs.size());
        std::vector<float>& c = weave && !stacked ? phase_c[size_t(t.rx)] : plain;
        grid.ids.clear();
        for (int ky : py.taps)  // stacked: one tap, the stacked weights' only one
            for (int kx : px.taps) grid.ids.push_back(stacked ? 0 : ky * p.kernel_w + kx);
        grid.row_delta.clear();
        for (int64_t iy0 : py.first_source) grid.row_delta.push_back(iy0 * p.src_stride_h);
        grid.col_delta.clear();
        for (int64_t ix0 : px.first_source) grid.col_delta.push_back(ix0 * p.src_stride_w);
        columns.reset(cols);
        dst_offsets.assign(cols, 0);
        // Tap a of the phase reads source row first_source[a] + qy: in range for a contiguous
        // run of a (first_source increases with a).
        auto range = [](const std::vector<int64_t>& first, int64_t q, int64_t size, int32_t& lo,
                        int32_t& hi) {
            lo = 0;
            hi = static_cast<int32_t>(first.size()) - 1;
            while (lo <= hi && first[lo] + q < 0) ++lo;
            while (hi >= lo && first[hi] + q >= size) --hi;
        };
        thread_local Footprint footprint;
        footprint.set_poison(poison);
        // Worth a copy when 4 or more taps read it, or when every phase of the unit shares it,
        // along phase rows of a register column or more (8-pixel rows, dcgan_g2, would gather
        // every panel again from it: 7% slower; a footprint per phase of 1 or 2 taps, unet and
        // hifigan, gained nothing; shared, one thread: unet_up2 46 -> 42.5 ms, vae_dec 15.1 ->
        // 14.6). A footprint per phase in fp16 converts every element once per phase, which
        // costs more than gathering once phases are many (fcn8s, 64 phases: 25 -> 30 ms).
        const bool wanted = (grid.ids.size() >= 4 || share) && px.count >= kNr &&
                            (p.src_type == CONVT_TYPE_F32 || share || ys.size() * xs.size() <= 4);
        const Plane plane = source_plane(t.g);
        bool compact = false;
        if (wanted && share) {
            if (!shared_ready)
                shared_ready = footprint.build(plane, ig, py.count, px.count, 1, 1, oy_all, ox_all,
                                               t.first, real);
            compact = shared_ready;
        } else if (wanted) {
            compact = footprint.build(plane, ig, py.count, px.count, 1, 1, py.first_source,
                                      px.first_source, t.first, real);
        }
        if (compact) {
            for (size_t a = 0; a < py.taps.size(); ++a)
                grid.row_delta[a] = footprint.row_delta(py.first_source[a]);
            for (size_t b = 0; b < px.taps.size(); ++b)
                grid.col_delta[b] = footprint.col_delta(px.first_source[b]);
        }
        // Per pixel work here is a few nanoseconds against tens of multiply-adds a pixel on the
        // narrow layers (grp4: 16 x 16 channels), so it is kept to increments: references
        // instead of thread-local lookups, footprint bases by q-row.
        Columns& cl = columns;
        const Footprint& fp = footprint;
        int64_t* const offsets = dst_offsets.data();
        if (compact) {  // zeros stand outside the image: every tap reads
            std::fill_n(cl.row_lo.begin(), real, 0);
            std::fill_n(cl.col_lo.begin(), real, 0);
            std::fill_n(cl.row_hi.begin(), real, static_cast<int32_t>(py.taps.size()) - 1);
            std::fill_n(cl.col_hi.begin(), real, static_cast<int32_t>(px.taps.size()) - 1);
        }
        PixelCursor at(t.first, py.count, px.count);
        int64_t row_base = 0;  // compact: the footprint base of the q-row's column 0
        for (int j = 0; j < real; ++j, at.next()) {
            const int64_t n = at.n, qy = at.y, qx = at.x;
            if (!weave && !stacked) offsets[j] = dst_offset(t.g, py, px, n, qy, qx);
            if (compact) {
                if (j == 0 || qx == 0) row_base = fp.base(n, qy, 0);
                cl.base[j] = row_base + qx;
                continue;
            }
            cl.base[j] = p.src_base + n * p.src_stride_n + int64_t(t.g) * ig * p.src_stride_c +
                         qy * p.src_stride_h + qx * p.src_stride_w;
            range(py.first_source, qy, p.src_h, cl.row_lo[j], cl.row_hi[j]);
            range(px.first_source, qx, p.src_w, cl.col_lo[j], cl.col_hi[j]);
        }
        c.resize(size_t(tiles) * kMr * cols);
        for (int oc = 0; oc < tiles * kMr; ++oc)
            std::fill_n(c.data() + int64_t(oc) * cols, cols,
                        oc < c_rows ? w.bias[int64_t(t.g) * og + oc % og] : 0.f);
        columns.summarize(cols);
        accumulate_taps(compact ? footprint.source() : source, grid, columns, cols, ig,
                        weights + t.g * group_weights, int64_t(tiles) * ig * kMr, int64_t(ig) * kMr,
                        tiles, c_rows, c.data(), packed, compact);
        if (ntype != NeuronType::None)
            for (int oc = 0; oc < c_rows; ++oc) {
                const float slope = w.slopes.empty() ? 0.f : w.slopes[int64_t(t.g) * og + oc % og];
                float* r = c.data() + int64_t(oc) * cols;
                for (int j = 0; j < real; ++j)
                    r[j] = apply_neuron(ntype, r[j], p.neuron_a, p.neuron_b, p.neuron_c, slope);
            }
        if (stacked) return store_stacked(t.g, t.first, real, c.data());
        if (weave) {  // the row phase's last x-phase stores them all
            if (t.rx + 1 < int(xs.size())) return;
            thread_local std::vector<const float*> phase_rows;
            phase_rows.clear();
            for (const std::vector<float>& pc : phase_c) phase_rows.push_back(pc.data());
            if (weave_pixels)
                store_woven_pixels(t.g, py, t.first, real, phase_rows.data());
            else
                store_woven(t.g, py, t.first, real, phase_rows.data());
            return;
        }
        find_runs(dst_offsets.data(), real, runs);
        scatter_tile(dst, p.dst_type, dst_offsets.data(), runs, p.dst_stride_c, c.data(), cols, og,
                     real);
    };
    // Stacked layers whose source the caches do not hold: units run a few at a time, the next
    // one's footprint fetched while one unit's products run, as dX's (unet_up2 forward 1.07x
    // faster in NCHW and NHWC, fp16 1.06x; unet_up1 1.00x).
    const int64_t units = int64_t(task_groups.size()) - 1;
    const int64_t src_bytes = n_images * p.groups * ig * p.src_h * p.src_w * type_bytes(p.src_type);
    const bool ahead = stacked && xs[0].count >= kNr && src_bytes >= kStreamBytes;
    run_units(
        units, 1, ahead,
        [&](int64_t u, Prefetcher& fetch) {
            const Task& t = tasks[task_groups[u]];
            Footprint::plan(source_plane(t.g), ig, ys[0].count, xs[0].count, 1, 1, oy_all, ox_all,
                            t.first, static_cast<int>(std::min<int64_t>(cols, most - t.first)),
                            fetch);
            fetch.spread(int64_t(tiles) * (cols / kNr));
        },
        [&](int64_t u) {
            bool shared_ready = false;
            for (size_t i = task_groups[u]; i < task_groups[u + 1]; ++i) {
                if (i > task_groups[u] && tasks[i].g != tasks[i - 1].g) shared_ready = false;
                run_task(tasks[i], shared_ready);
            }
            if (stream) stream_fence();  // streamed stores seen by other threads once fenced
        });
}

void backward_data_gemm(const ConvtParams& p, const GemmWeights& w, const void* dy, void* dx) {
    const int og = p.out_per_group, ig = p.in_per_group, tiles = w.in_tiles;
    const int64_t per_image = int64_t(p.src_h) * p.src_w;
    const int64_t pixels = int64_t(p.num_images) * per_image;
    if (pixels == 0) return;
    const int cols = block_columns(p, int64_t(w.taps) * og * ig,
                                   [&](int b) { return ceil_div(pixels, b) * p.groups; });
    const int64_t blocks = ceil_div(pixels, cols);
    const bool poison = detail::poison_scratch();
    TapGrid grid;  // every tap: row ky moves up dilation_y rows of dY, column kx likewise
    for (int t = 0; t < w.taps; ++t) grid.ids.push_back(t);
    for (int ky = 0; ky < p.kernel_h; ++ky)
        grid.row_delta.push_back(-int64_t(p.dilation_y) * ky * p.dst_stride_h);
    for (int kx = 0; kx < p.kernel_w; ++kx)
        grid.col_delta.push_back(-int64_t(p.dilation_x) * kx * p.dst_stride_w);
    const Gathered grad{dy, p.dst_type, p.dst_stride_c};
    const int64_t group_weights = int64_t(w.taps) * tiles * og * kMr;
    // dX of 16 MB or more streamed to memory, as the forward's woven rows.
    const int64_t dx_bytes = pixels * p.groups * ig * int64_t(sizeof(float));
    const bool stream = p.src_type == CONVT_TYPE_F32 && dx_bytes >= kStreamBytes;
    // Float dX of kTilesOuterBytes or more, written in place from register tiles whose rows
    // start mid-line: tiles outer, so that each row's lines are finished by the next kernel
    // call. Panels outer, a panel's rows (a plane apart, so in one L1 set) left each line
    // half written until the next panel, by when it had left L1 (in-process A/B, NCHW, N = 8,
    // dX 16 bytes past a line as numpy's large arrays: dcgan_out 0.83-0.91x the time, grp4
    // 0.89-0.95x; with dX line-aligned tiles outer took 1.06x, and at N = 1 to 4, whose dX the
    // caches keep, 1.06-1.44x: there the panel's B read once wins).
    const bool tiles_outer = dx_bytes >= kTilesOuterBytes;
    // dX pixel (iy, ix) reads dY row iy * stride - first tap - dilation * ky, column likewise.
    std::vector<int64_t> oy, ox;
    for (int ky = 0; ky < p.kernel_h; ++ky)
        oy.push_back(-int64_t(p.first_tap_y) - int64_t(p.dilation_y) * ky);
    for (int kx = 0; kx < p.kernel_w; ++kx)
        ox.push_back(-int64_t(p.first_tap_x) - int64_t(p.dilation_x) * kx);
    // Group g's dY, where its footprints are built from.
    auto grad_plane = [&](int g) -> Plane {
        return {dy,
                p.dst_type,
                p.dst_base + int64_t(g) * og * p.dst_stride_c + p.clip_y * p.dst_stride_h +
                    p.clip_x * p.dst_stride_w,
                p.dst_stride_n,
                p.dst_stride_c,
                p.dst_stride_h,
                p.dst_stride_w,
                p.clip_h,
                p.clip_w};
    };
    // Any stride when the weights lie tile-major: every tap then reads in place (fsrcnn dX,
    // stride 3, one thread: 30.7 -> 19.2 ms).
    const bool tile_major = w.backward_tap_step == int64_t(og) * kMr;
    const bool footprints =
        w.taps >= 4 && p.src_w >= kNr && (Footprint::splits(p.stride_x) || tile_major);
    // Block `first` of group g.
    auto run_block = [&](int g, int64_t first) {
        const int real = static_cast<int>(std::min<int64_t>(cols, pixels - first));
        thread_local Columns columns;
        thread_local std::vector<int64_t> dx_offsets;
        thread_local std::vector<Run> runs;
        thread_local std::vector<float> c, packed;
        columns.reset(cols);
        dx_offsets.assign(cols, 0);
        // Tap ky reaches dY row yy = e - dilation * ky (e = iy * stride - first tap): inside
        // [0, clip) for a contiguous run of ky.
        auto range = [](int64_t e, int64_t dil, int64_t clip, int kernel, int32_t& lo,
                        int32_t& hi) {
            lo = static_cast<int32_t>(std::clamp<int64_t>(floor_div(e - clip, dil) + 1, 0, kernel));
            hi = static_cast<int32_t>(std::clamp<int64_t>(floor_div(e, dil), -1, kernel - 1));
        };
        // dY's footprint as in the forward (dil2 dX 10.3 -> 8.4 ms, s1_same 22.3 -> 21.5, one
        // thread), its columns split by phase at stride 2.
        thread_local Footprint footprint;
        footprint.set_poison(poison);
        thread_local TapGrid local;
        const bool compact =
            footprints && footprint.build(grad_plane(g), og, p.src_h, p.src_w, p.stride_y,
                                          p.stride_x, oy, ox, first, real);
        if (compact) {
            local.ids = grid.ids;
            local.row_delta.clear();
            local.col_delta.clear();
            for (int64_t y : oy) local.row_delta.push_back(footprint.row_delta(y));
            for (int64_t x : ox) local.col_delta.push_back(footprint.col_delta(x));
        }
        // As in the forward: increments and references, no thread-local lookups per pixel.
        Columns& cl = columns;
        const Footprint& fp = footprint;
        int64_t* const offsets = dx_offsets.data();
        if (compact) {  // zeros stand outside dY: every tap reads
            std::fill_n(cl.row_lo.begin(), real, 0);
            std::fill_n(cl.col_lo.begin(), real, 0);
            std::fill_n(cl.row_hi.begin(), real, p.kernel_h - 1);
            std::fill_n(cl.col_hi.begin(), real, p.kernel_w - 1);
        }
        PixelCursor at(first, p.src_h, p.src_w);
        int64_t row_base = 0;  // compact: the footprint base of the row's column 0
        for (int j = 0; j < real; ++j, at.next()) {
            const int64_t n = at.n, iy = at.y, ix = at.x;
            offsets[j] = p.src_base + n * p.src_stride_n + int64_t(g) * ig * p.src_stride_c +
                         iy * p.src_stride_h + ix * p.src_stride_w;
            if (compact) {
                if (j == 0 || ix == 0) row_base = fp.base(n, iy, 0);
                cl.base[j] = row_base + ix;
                continue;
            }
            const int64_t ey = iy * p.stride_y - p.first_tap_y;
            const int64_t ex = ix * p.stride_x - p.first_tap_x;
            cl.base[j] = p.dst_base + n * p.dst_stride_n + int64_t(g) * og * p.dst_stride_c +
                         (p.clip_y + ey) * p.dst_stride_h + (p.clip_x + ex) * p.dst_stride_w;
            range(ey, p.dilation_y, p.clip_h, p.kernel_h, cl.row_lo[j], cl.row_hi[j]);
            range(ex, p.dilation_x, p.clip_w, p.kernel_w, cl.col_lo[j], cl.col_hi[j]);
        }
        columns.summarize(cols);
        const float* a = w.backward.data() + g * group_weights;
        // A full block that is one run of float dX (NCHW): the indirect kernel, where it serves,
        // writes the sums there, without the zeroed buffer and the copy after it (a fifth of
        // dcgan_out's dX on two threads). Streamed outputs keep the copy.
        bool one_run = compact && !stream && p.src_type == CONVT_TYPE_F32 && real == cols;
        for (int j = 1; j < real && one_run; ++j) one_run = dx_offsets[j] == dx_offsets[0] + j;
        float* const run_at = static_cast<float*>(dx) + dx_offsets[0];
        // Rows that start mid-line, or planes not whole lines apart.
        const bool misaligned = reinterpret_cast<uintptr_t>(run_at) % kLineBytes != 0 ||
                                p.src_stride_c * int64_t(sizeof(float)) % kLineBytes != 0;
        if (one_run && indirect_taps(footprint.source(), local, columns, cols, og, a,
                                     w.backward_tap_step, w.backward_tile_step, tiles, run_at,
                                     p.src_stride_c, ig, true, tiles_outer && misaligned))
            return;
        // Else the sums go to a buffer, then out. The indirect kernel overwrites it: no zeros
        // first (dcgan_out and fsrcnn_x3 NHWC dX 1.04x faster; grp4 1.01x).
        c.resize(size_t(tiles) * kMr * cols);
        if (poison) std::fill(c.begin(), c.end(), poison_value());  // tests: what it misses
        if (!compact || one_run ||
            !indirect_taps(footprint.source(), local, columns, cols, og, a, w.backward_tap_step,
                           w.backward_tile_step, tiles, c.data(), cols, ig, true)) {
            std::fill(c.begin(), c.end(), 0.f);
            accumulate_taps(compact ? footprint.source() : grad, compact ? local : grid, columns,
                            cols, og, a, w.backward_tap_step, w.backward_tile_step, tiles, ig,
                            c.data(), packed, compact);
        }
        find_runs(dx_offsets.data(), real, runs);
        scatter_tile(dx, p.src_type, dx_offsets.data(), runs, p.src_stride_c, c.data(), cols, ig,
                     real, stream);
        if (stream) stream_fence();
    };
    // Groups inner: a block's groups run one after another, so an NHWC dY line, which holds
    // several groups' channels, is read from memory once. Channels-contiguous dX (NHWC): one
    // task runs them all, so one thread writes each pixel's channels (grp4's 16-channel runs of
    // a misaligned row share cache lines with the next group's, which the other thread wrote
    // at the same time: 1.02x faster), while the blocks still make four tasks a thread.
    const int64_t threads = ThreadPool::instance().num_threads();
    const bool all_groups = p.src_stride_c == 1 && p.groups > 1 && blocks >= 4 * threads;
    const int per_task = all_groups ? p.groups : 1;
    // dY larger than the caches: tasks run in units of a few consecutive ones, and while one
    // block's products run, the next block's dY is fetched a few lines a kernel call, so that
    // its footprint copies from the caches (unet_up2's 67 MB: dX 1.13-1.16x faster, grp4's 33
    // MB 1.01x; on layers whose dY the caches hold it gained nothing).
    const int64_t dy_bytes =
        int64_t(p.num_images) * p.groups * og * p.clip_h * p.clip_w * type_bytes(p.dst_type);
    const bool ahead = footprints && dy_bytes >= kStreamBytes;
    run_units(
        blocks * p.groups, per_task, ahead,
        [&](int64_t t, Prefetcher& fetch) {
            const int64_t first = t / p.groups * cols;
            Footprint::plan(grad_plane(static_cast<int>(t % p.groups)), og, p.src_h, p.src_w,
                            p.stride_y, p.stride_x, oy, ox, first,
                            static_cast<int>(std::min<int64_t>(cols, pixels - first)), fetch);
            fetch.spread(int64_t(tiles) * (cols / kNr));
        },
        [&](int64_t t) { run_block(static_cast<int>(t % p.groups), (t / p.groups) * cols); });
}

void backward_weights_gemm(const ConvtParams& p, const void* x, const void* dy,
                           const detail::GradientOutput& out) {
    const int og = p.out_per_group, ig = p.in_per_group;
    const int taps = p.kernel_h * p.kernel_w;
    const int out_tiles = tiles_of(og, kMr), in_panels = tiles_of(ig, kNr);
    const int ldc = in_panels * kNr;
    const int64_t sx = p.stride_x;
    // Tasks own output-channel tiles of a group for every tap. Work goes by slices of whole
    // source rows: each row of X is packed once for every tap, and each dY row once per stride
    // phase, [j][channel] with j the column within the phase. Tap kx then reads the phase row
    // shifted by whole columns, so its operands are pointer offsets into the packed rows; the
    // rows of a slice are segments of one register-tile pass (the tile stays in registers).
    //
    // Layers with few weights and many pixels (s1_same: 37K weights, 25K pixels) also split the
    // source rows into a fixed number of ranges, each summed into its own partial dW, the
    // partials then added in range order: every task packs only its own rows (splitting the
    // output tiles alone packed every X row once per task) and fills whole tiles. The number of
    // ranges depends on the layer alone, never on the thread count: results stay bitwise equal.
    const int64_t all_rows = int64_t(p.num_images) * p.src_h;
    const int64_t tile_floats = int64_t(taps) * kMr * ldc;  // one output tile's dW, all taps
    const int64_t group_floats = tile_floats * out_tiles;
    const int ranges =
        group_floats * p.groups <= kRowSplitMaxWeights
            ? static_cast<int>(std::clamp<int64_t>(all_rows / kRowsPerRange, 1, kRowRanges))
            : 1;
    // One task a thread: every split packs all of X again (four a thread: transposes 8 -> 11%
    // of dcgan_g2's dW on 2 threads; two: dcgan_g2 dW 12.4-12.7 -> 11.8-12.3 ms, hifigan 24.5 ->
    // 23.2-23.6; one, once X was packed panel-major: dcgan_g2 12.3-12.5 -> 11.7-11.8, the others
    // unchanged).
    const int64_t want = ThreadPool::instance().num_threads();
    const int splits = static_cast<int>(
        std::clamp<int64_t>(ceil_div(want, int64_t(p.groups) * ranges), 1, out_tiles));
    // Not cleared here: each task clears its own tiles' slots before summing into them (the
    // whole buffer cleared first as well was 1.4% of vae_dec's dW).
    const std::unique_ptr<float[]> partials(
        ranges > 1 ? new float[size_t(p.groups) * ranges * group_floats] : nullptr);
    const Gathered xs{x, p.src_type, p.src_stride_c};
    const Gathered ds{dy, p.dst_type, p.dst_stride_c};
    const int64_t phases = std::min<int64_t>(sx, p.clip_w);
    const int64_t phase_len = ceil_div(p.clip_w, sx);  // columns of phase 0, the longest
    struct TapColumns {                                // what tap column kx reads, for every row
        int64_t phase, shift, lo, hi;  // dY phase row index j = ix - shift for ix in [lo, hi]
    };
    // Float dY is read in place as A, each register tile's channel rows where they lie, when
    // few panels of input channels share each packed copy: packing was a fifth to a third of
    // those layers' dW (see kMaxInPlaceAPanels). Not with the NEON kernels, which have no
    // strided-segment kernel (the portable one would run).
    const bool dy_in_place =
        p.dst_type == CONVT_TYPE_F32 && !use_neon() &&
        in_panels <= (p.dst_stride_c == 1 ? kMaxInPlaceAPanelsNhwc : kMaxInPlaceAPanels);
    std::vector<TapColumns> tap_columns(static_cast<size_t>(p.kernel_w));
    for (int kx = 0; kx < p.kernel_w; ++kx) {
        const int64_t cx = p.first_tap_x + int64_t(p.dilation_x) * kx;
        const int64_t r = pos_mod(-cx, sx);
        const Span span = source_span(cx, sx, p.clip_w, p.src_w);
        tap_columns[kx] = {r, (cx + r) / sx, span.lo, span.hi};
    }
    ThreadPool::instance().parallel_for(int64_t(p.groups) * ranges * splits, [&](int64_t ti) {
        // Groups inner, as in backward_data_gemm (NHWC lines hold several groups' channels).
        const int g = static_cast<int>(ti % p.groups);
        const int64_t rest = ti / p.groups;
        const int range = static_cast<int>(rest / splits);
        const int64_t row_begin = all_rows * range / ranges;
        const int64_t row_end = all_rows * (range + 1) / ranges;
        // Tiles split evenly (43 tiles in 8 splits of 6 left one split of 1: 2 threads ended
        // 24 against 19 tiles).
        const int split = static_cast<int>(rest % splits);
        const int o0 = static_cast<int>(int64_t(split) * out_tiles / splits);
        const int o1 = static_cast<int>(int64_t(split + 1) * out_tiles / splits);
        if (o0 >= o1) return;
        const int rows = (o1 - o0) * kMr;
        // Floats packed per source row at most: X, then every (ky, phase) dY row (none with dY
        // read in place, but slices keep the size that leaves the caches room for its rows).
        const int64_t x_floats = int64_t(p.src_w) * ldc;
        const int64_t phase_floats = phase_len * rows;
        const int64_t row_floats = x_floats + int64_t(p.kernel_h) * phases * phase_floats;
        const int64_t slice_rows =
            std::clamp<int64_t>(kWeightSliceBytes / (int64_t(sizeof(float)) * row_floats), 1, 64);
        thread_local std::vector<float> packed, c;
        thread_local std::vector<int64_t> off;
        thread_local std::vector<Segment> segments;
        packed.resize(static_cast<size_t>(slice_rows * (dy_in_place ? x_floats : row_floats)));
        const int64_t x_row = int64_t(p.src_w) * kNr, x_panel = slice_rows * x_row;
        off.resize(static_cast<size_t>(std::max<int64_t>(p.src_w, phase_len)));
        segments.resize(static_cast<size_t>(slice_rows));
        // [tap][row][ic]: this task's tiles, or its slots of the range's partial. Without
        // ranges (and not accumulating), register tiles wholly inside dW (every row an output
        // channel, every column an input channel) sum there in place, overwritten by a tap's
        // first products: no buffer of the task's sums to clear and copy out (2.1 MB a task on
        // dcgan_g2), nor dW to clear first (5% of dcgan_g2's dW); a tap without any is zeroed
        // at the end.
        auto* dw = static_cast<float*>(out.weights);
        const bool in_place = ranges == 1 && !out.accumulate;
        const int full_tiles = og / kMr, full_panels = ig / kNr;
        auto inside = [&](int o, int jp) { return in_place && o < full_tiles && jp < full_panels; };
        float* ct0 = c.data();
        if (ranges > 1) {
            ct0 = partials.get() + (int64_t(g) * ranges + range) * group_floats +
                  int64_t(o0) * tile_floats;
            std::fill(ct0, ct0 + size_t(taps) * rows * ldc, 0.f);
        } else {
            c.resize(size_t(taps) * rows * ldc);
            ct0 = c.data();
            if (!in_place) std::fill(c.begin(), c.end(), 0.f);
            // In place: the buffer's rows of the tail tile, and the tail panel of the others;
            // dW's rows of the whole tiles.
            for (int tap = 0; tap < taps && in_place; ++tap)
                for (int i = 0; i < rows; ++i) {
                    const int tail_from = o0 + i / kMr < full_tiles ? full_panels * kNr : 0;
                    float* row = ct0 + (size_t(tap) * rows + i) * ldc;
                    std::fill(row + tail_from, row + ldc, 0.f);
                }
        }
        thread_local std::vector<char> started;  // [tap]: its in-place tiles hold sums
        started.assign(static_cast<size_t>(taps), 0);
        const MicroKernel uk = micro_kernel();
        const StridedSegmentKernel strided = strided_segment_kernel();
        const int64_t a_step = sx * p.dst_stride_w;  // dY in place: a phase row's next column
        // The last tile of og % kMr rows (dil2's 32 outputs: 2 in the sixth tile), where the CPU
        // has a short-tile kernel: its rows over several panels at once, not 6-row tiles of
        // which all but 2 rows are padding (11% of dil2's dW GEMM).
        const ShortTileKernel short_tile = short_tile_kernel();
        const int short_rows = og % kMr;
        const bool short_last = short_tile && short_rows && o1 == out_tiles;
        // A dY row serves up to kernel_h source rows (through different ky): within a slice
        // each is packed once, into the next free slot after the X rows. A slice may span
        // images (dcgan_g2's 8-row images made every register tile reload its sums from L3 after
        // 64 products), so dY rows are keyed by image and row: n * clip_h + yy.
        // [row][ky]: its packed dY row (in place: its offset in dY, below zero in a view with
        // negative strides), or kMissing.
        thread_local std::vector<int64_t> dy_at;
        thread_local std::vector<int32_t> slot_of;  // [key - lowest key of the slice]
        dy_at.resize(static_cast<size_t>(slice_rows * p.kernel_h));
        const int64_t dy_floats = phases * phase_floats;  // one packed dY row, every phase
        const int64_t reach = int64_t(p.dilation_y) * (p.kernel_h - 1);
        for (int64_t r0 = row_begin; r0 < row_end;) {
            const int nr = static_cast<int>(std::min(slice_rows, row_end - r0));
            // The keys the slice's rows may reach (clamped to the clip, whose rows alone pack).
            auto key = [&](int64_t row, int64_t yy) {
                return row / p.src_h * p.clip_h + std::clamp<int64_t>(yy, 0, p.clip_h - 1);
            };
            int64_t key_lo = INT64_MAX, key_hi = INT64_MIN;  // packed dY rows' slots only
            for (int r = 0; r < nr && !dy_in_place; ++r) {
                const int64_t e = (r0 + r) % p.src_h * p.stride_y - p.first_tap_y;
                key_lo = std::min(key_lo, key(r0 + r, e - reach));
                key_hi = std::max(key_hi, key(r0 + r, e));
            }
            if (!dy_in_place) slot_of.assign(static_cast<size_t>(key_hi - key_lo + 1), -1);
            int slots = 0;
            float* dy_base = packed.data() + slice_rows * x_floats;
            for (int r = 0; r < nr; ++r) {
                const int64_t n = (r0 + r) / p.src_h, iy = (r0 + r) % p.src_h;
                // X panel-major over the slice, [panel][row][ix][16]: a register tile's
                // segments (its rows) then read B 512 B apart, not a row's whole X apart
                // (16 KB on dcgan_g2, one L1 set for every row: 96 -> 110 GFLOP/s alone).
                float* base = packed.data() + r * x_row;
                for (int64_t ix = 0; ix < p.src_w; ++ix)
                    off[ix] = p.src_base + n * p.src_stride_n + int64_t(g) * ig * p.src_stride_c +
                              iy * p.src_stride_h + ix * p.src_stride_w;
                pack_rows(xs, off.data(), p.src_w, 0, ldc, ig, kNr, base, x_panel);
                for (int ky = 0; ky < p.kernel_h; ++ky) {
                    const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                    int64_t& at = dy_at[r * p.kernel_h + ky];
                    at = kMissing;
                    if (yy < 0 || yy >= p.clip_h) continue;
                    if (dy_in_place) {  // the row's element of the task's first output channel
                        at = p.dst_base + n * p.dst_stride_n +
                             (int64_t(g) * og + int64_t(o0) * kMr) * p.dst_stride_c +
                             (p.clip_y + yy) * p.dst_stride_h + p.clip_x * p.dst_stride_w;
                        continue;
                    }
                    int32_t& slot = slot_of[key(r0 + r, yy) - key_lo];
                    at = (slot >= 0 ? slot : slots) * dy_floats;
                    if (slot >= 0) continue;
                    slot = slots++;
                    for (int64_t ph = 0; ph < phases; ++ph) {
                        const int64_t len = ceil_div(p.clip_w - ph, sx);
                        for (int64_t j = 0; j < len; ++j)
                            off[j] = p.dst_base + n * p.dst_stride_n +
                                     int64_t(g) * og * p.dst_stride_c +
                                     (p.clip_y + yy) * p.dst_stride_h +
                                     (p.clip_x + ph + sx * j) * p.dst_stride_w;
                        pack_rows(ds, off.data(), static_cast<int>(len), o0 * kMr, o1 * kMr, og,
                                  kMr, dy_base + at + ph * phase_floats);
                    }
                }
            }
            for (int tap = 0; tap < taps; ++tap) {
                const int ky = tap / p.kernel_w;
                const TapColumns& tc = tap_columns[tap % p.kernel_w];
                if (tc.lo > tc.hi) continue;
                const int64_t len = ceil_div(p.clip_w - tc.phase, sx);  // this phase's columns
                float* ct = ct0 + size_t(tap) * rows * ldc;
                // One segment list for the tap (tile 0, panel 0); tiles and panels are shifts.
                int count = 0;
                for (int r = 0; r < nr; ++r) {
                    const int64_t at = dy_at[r * p.kernel_h + ky];
                    if (at == kMissing) continue;
                    const float* a =
                        dy_in_place
                            ? static_cast<const float*>(dy) + at +
                                  (tc.phase + sx * (tc.lo - tc.shift)) * p.dst_stride_w
                            : dy_base + at + tc.phase * phase_floats + (tc.lo - tc.shift) * kMr;
                    segments[count++] = {a, packed.data() + r * x_row + tc.lo * kNr,
                                         static_cast<int>(tc.hi - tc.lo + 1)};
                }
                if (!count) continue;
                const bool first = !started[tap];
                started[tap] = 1;
                for (int o = 0; o < o1 - o0 && dy_in_place; ++o) {
                    // Tile o's channel rows: o * kMr channels on; the last may be short.
                    const int64_t a_shift = int64_t(o) * kMr * p.dst_stride_c;
                    const int tile_rows = std::min(kMr, og - (o0 + o) * kMr);
                    if (tile_rows < kMr) {  // never in place: not a whole tile
                        strided(segments.data(), count, a_shift, p.dst_stride_c, a_step, 0, x_panel,
                                tile_rows, in_panels, ct + int64_t(o) * kMr * ldc, ldc, false);
                        continue;
                    }
                    for (int jp = 0; jp < in_panels; ++jp) {
                        if (inside(o0 + o, jp))
                            strided(segments.data(), count, a_shift, p.dst_stride_c, a_step,
                                    int64_t(jp) * x_panel, x_panel, kMr, 1,
                                    dw + ((int64_t(g) * og + (o0 + o) * kMr) * taps + tap) * ig +
                                        jp * kNr,
                                    int64_t(taps) * ig, first);
                        else
                            strided(segments.data(), count, a_shift, p.dst_stride_c, a_step,
                                    int64_t(jp) * x_panel, x_panel, kMr, 1,
                                    ct + int64_t(o) * kMr * ldc + jp * kNr, ldc, false);
                    }
                }
                for (int o = 0; o < o1 - o0 && !dy_in_place; ++o) {
                    if (short_last && o == o1 - o0 - 1) {  // never in place: not a whole tile
                        short_tile(segments.data(), count, int64_t(o) * len * kMr, 0, x_panel,
                                   short_rows, in_panels, ct + int64_t(o) * kMr * ldc, ldc, false);
                        continue;
                    }
                    for (int jp = 0; jp < in_panels; ++jp) {
                        const int64_t a_shift = int64_t(o) * len * kMr,
                                      b_shift = int64_t(jp) * x_panel;
                        if (inside(o0 + o, jp))
                            uk(segments.data(), count, a_shift, b_shift,
                               dw + ((int64_t(g) * og + (o0 + o) * kMr) * taps + tap) * ig +
                                   jp * kNr,
                               int64_t(taps) * ig, first);
                        else
                            uk(segments.data(), count, a_shift, b_shift,
                               ct + int64_t(o) * kMr * ldc + jp * kNr, ldc, false);
                    }
                }
            }
            r0 += nr;
        }
        if (ranges > 1) return;
        for (int tap = 0; tap < taps && in_place; ++tap)
            for (int oc = o0 * kMr; oc < std::min(full_tiles, o1) * kMr && !started[tap]; ++oc)
                std::fill_n(dw + ((int64_t(g) * og + oc) * taps + tap) * ig,
                            int64_t(full_panels) * kNr, 0.f);
        for (int tap = 0; tap < taps; ++tap)
            for (int oc = o0 * kMr; oc < std::min(og, o1 * kMr); ++oc) {
                // The columns summed in the buffer: all, or the tail panel's past in-place ones.
                const int from = inside(oc / kMr, 0) ? full_panels * kNr : 0;
                write_gradient_row(dw + ((int64_t(g) * og + oc) * taps + tap) * ig + from,
                                   ct0 + (size_t(tap) * rows + (oc - o0 * kMr)) * ldc + from,
                                   ig - from, out.accumulate);
            }
    });
    if (ranges == 1) return;
    // The range partials of each (group, split, tap) block, added in range order.
    auto* dw = static_cast<float*>(out.weights);
    ThreadPool::instance().parallel_for(int64_t(p.groups) * splits * taps, [&](int64_t bi) {
        const int g = static_cast<int>(bi / (int64_t(splits) * taps));
        const int split = static_cast<int>(bi / taps % splits), tap = static_cast<int>(bi % taps);
        const int o0 = static_cast<int>(int64_t(split) * out_tiles / splits);
        const int o1 = static_cast<int>(int64_t(split + 1) * out_tiles / splits);
        const int rows = (o1 - o0) * kMr;
        const float* block = partials.get() + int64_t(g) * ranges * group_floats +
                             int64_t(o0) * tile_floats + int64_t(tap) * rows * ldc;
        for (int oc = o0 * kMr; oc < std::min(og, o1 * kMr); ++oc) {
            const float* first = block + int64_t(oc - o0 * kMr) * ldc;
            float* to = dw + ((int64_t(g) * og + oc) * taps + tap) * ig;
            for (int i = 0; i < ig; ++i) {
                float sum = first[i];
                for (int r = 1; r < ranges; ++r) sum += first[int64_t(r) * group_floats + i];
                to[i] = out.accumulate ? to[i] + sum : sum;
            }
        }
    });
}

bool backward_weights_taps_fits(const ConvtParams& p) {
    return float_images(p) && p.out_per_group <= 3 && p.in_per_group >= 8;
}

void backward_weights_taps_image(const ConvtParams& p, const void* x, const void* dy, int64_t n,
                                 int64_t row_begin, int64_t row_end, float* partial) {
    const int og = p.out_per_group, ig = p.in_per_group, kh = p.kernel_h, kw = p.kernel_w;
    const int taps = kh * kw, width = p.src_w;
    // B's columns: (ky, oc, kx), kx reversed within, so a tap row's kw columns at a pixel are
    // consecutive dY elements at dilation 1 (4 floats for dcgan_out).
    const int ncols = kh * og * kw;
    auto column = [&](int ky, int oc, int kx) { return (ky * og + oc) * kw + (kw - 1 - kx); };
    const int panels = tiles_of(ncols, kNr), tiles = tiles_of(ig, kMr), ldc = panels * kNr;
    const int64_t slice_rows =
        std::clamp<int64_t>(kTapsSlicePixels / width, 1, std::max<int64_t>(1, row_end - row_begin));
    const int64_t kpix = slice_rows * width;  // pixels of a slice at most: its depth
    // A, X's channel rows, is read in place when the slice's rows are one run of fp32 pixels
    // (NCHW or NHWC), else copied to floats [ic][pixel].
    const bool in_place = p.src_type == CONVT_TYPE_F32 && p.src_stride_h == width * p.src_stride_w;
    thread_local std::vector<float> bpack, xrows, c;
    bpack.resize(static_cast<size_t>(panels * kpix * kNr));
    if (!in_place) xrows.resize(static_cast<size_t>(int64_t(ig) * kpix));
    // Where each tap meets dY: source rows [y[ky].lo, y[ky].hi], columns [xs[kx].lo, xs[kx].hi].
    std::vector<Span> ys(static_cast<size_t>(kh)), xs(static_cast<size_t>(kw));
    for (int ky = 0; ky < kh; ++ky)
        ys[ky] =
            source_span(p.first_tap_y + int64_t(p.dilation_y) * ky, p.stride_y, p.clip_h, p.src_h);
    for (int kx = 0; kx < kw; ++kx)
        xs[kx] =
            source_span(p.first_tap_x + int64_t(p.dilation_x) * kx, p.stride_x, p.clip_w, width);
    // Columns [inner.lo, inner.hi] meet every tap column. With runs (no dilation along the
    // rows), a tap row's kw columns there read consecutive floats of the dY row.
    Span inner{0, width - 1};
    for (const Span& s : xs) inner = {std::max(inner.lo, s.lo), std::min(inner.hi, s.hi)};
    const bool runs = p.dilation_x == 1 && inner.lo <= inner.hi;
    // dY row yy of channel ch as clip_w consecutive floats: in place (fp32 rows), else
    // converted into a buffer (fp16 at once, with F16C where the CPU has it).
    thread_local std::vector<float> dy_floats;
    dy_floats.resize(static_cast<size_t>(p.clip_w));
    auto dy_row = [&](int64_t ch, int64_t yy) -> const float* {
        const int64_t at = dst_index(p, n, ch, yy, 0);
        if (p.dst_type == CONVT_TYPE_F32 && p.dst_stride_w == 1)
            return static_cast<const float*>(dy) + at;
        load_row(dy, p.dst_type, at, p.dst_stride_w, p.clip_w, dy_floats.data());
        return dy_floats.data();
    };
    const StridedAKernel sk = strided_a_kernel();
    const bool poison = detail::poison_scratch();
    // Group g's sums into c, [ic][column]; `exact`: each tap over its own pixels alone.
    auto sum_group = [&](int g, bool exact) {
        c.assign(size_t(tiles) * kMr * ldc, 0.f);
        for (int64_t r0 = row_begin; r0 < row_end; r0 += slice_rows) {
            const int nr = static_cast<int>(std::min(slice_rows, row_end - r0));
            const int depth = nr * width;
            // B[panel][pixel][kNr]: dY at every pixel's taps, zeros where a tap misses dY.
            // Only what no copy reaches is zeroed (a memset of all of B, then the copies over
            // it; in-process A/B: fsrcnn dW 0.97x, dcgan_out 1.00x). Tests poison B first with
            // a NaN of its own payload and check that none survives the packing (a plain NaN
            // would pass unseen: a sum that is not finite is summed again below, exactly).
            if (poison) std::fill(bpack.begin(), bpack.end(), poison_value());
            for (int col = ncols; col < ldc; ++col)  // the last panel's columns past B's
                for (int j = 0; j < depth; ++j)
                    bpack[(col / kNr) * kpix * kNr + int64_t(j) * kNr + col % kNr] = 0.f;
            for (int r = 0; r < nr; ++r) {
                const int64_t iy = r0 + r;
                for (int ky = 0; ky < kh; ++ky) {
                    const bool row_in = iy >= ys[ky].lo && iy <= ys[ky].hi;
                    const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                    for (int oc = 0; oc < og; ++oc) {
                        const float* d = row_in ? dy_row(int64_t(g) * og + oc, yy) : nullptr;
                        // Pixels in `inner` meet every tap of the row: with runs, kw
                        // consecutive floats of the row, copied at once when one panel holds
                        // them.
                        const int col0 = column(ky, oc, kw - 1);
                        const bool copy = row_in && runs && col0 / kNr == (col0 + kw - 1) / kNr;
                        if (copy) {
                            float* b = bpack.data() + (col0 / kNr) * kpix * kNr +
                                       int64_t(r) * width * kNr + col0 % kNr + inner.lo * kNr;
                            // kx = kw - 1's column of dY at pixel inner.lo, then stride_x on
                            const int64_t sxs = p.stride_x;
                            const float* from = d + inner.lo * sxs - (p.first_tap_x + kw - 1);
                            const int64_t count = inner.hi - inner.lo + 1;
                            if (kw == 4)
                                for (int64_t i = 0; i < count; ++i, from += sxs, b += kNr)
                                    std::memcpy(b, from, 4 * sizeof(float));
                            else
                                for (int64_t i = 0; i < count; ++i, from += sxs, b += kNr)
                                    std::copy_n(from, kw, b);
                        }
                        for (int kx = 0; kx < kw; ++kx) {
                            const int col = column(ky, oc, kx);
                            float* b = bpack.data() + (col / kNr) * kpix * kNr +
                                       int64_t(r) * width * kNr + col % kNr;
                            const int64_t cx = p.first_tap_x + int64_t(p.dilation_x) * kx;
                            // [lo, hi] from dY, the rest of the row zeros
                            const int64_t lo = row_in ? xs[kx].lo : width,
                                          hi = row_in ? xs[kx].hi : width - 1;
                            auto gather = [&](int64_t from, int64_t to) {
                                for (int64_t ix = from; ix <= to; ++ix)
                                    b[ix * kNr] = d[ix * p.stride_x - cx];
                            };
                            for (int64_t ix = 0; ix < std::min<int64_t>(lo, width); ++ix)
                                b[ix * kNr] = 0.f;
                            for (int64_t ix = std::max(lo, hi + 1); ix < width; ++ix)
                                b[ix * kNr] = 0.f;
                            if (!row_in) continue;
                            if (!copy) {
                                gather(lo, hi);
                                continue;
                            }
                            gather(lo, std::min(hi, inner.lo - 1));
                            gather(std::max(lo, inner.hi + 1), hi);
                        }
                    }
                }
            }
            if (poison)
                for (int jp = 0; jp < panels; ++jp)
                    if (holds_poison(bpack.data() + int64_t(jp) * kpix * kNr, int64_t(depth) * kNr))
                        throw std::logic_error("few-output dW: an element of B left unwritten");
            const float* a = nullptr;
            int64_t lda = kpix, astep = 1;
            if (in_place) {
                a = static_cast<const float*>(x) + src_index(p, n, int64_t(g) * ig, r0, 0);
                lda = p.src_stride_c;
                astep = p.src_stride_w;
            } else if (p.src_stride_c == 1) {
                // Channels contiguous (fp16 NHWC, gapped views): each row's pixels converted
                // for all the group's channels at once, [pixel][ic], read as fp32 NHWC rows are
                // (a strided conversion a channel: fp16 NHWC dcgan_out dW 1.39x slower,
                // fsrcnn_x3 1.10x).
                for (int r = 0; r < nr; ++r)
                    load_pixels(x, p.src_type, src_index(p, n, int64_t(g) * ig, r0 + r, 0), width,
                                p.src_stride_w, ig, xrows.data() + int64_t(r) * width * ig);
                a = xrows.data();
                lda = 1;
                astep = ig;
            } else {
                for (int ic = 0; ic < ig; ++ic)
                    for (int r = 0; r < nr; ++r)
                        load_row(x, p.src_type, src_index(p, n, int64_t(g) * ig + ic, r0 + r, 0),
                                 p.src_stride_w, width,
                                 xrows.data() + int64_t(ic) * kpix + int64_t(r) * width);
                a = xrows.data();
            }
            if (!exact) {
                for (int o = 0; o < tiles; ++o)
                    for (int jp = 0; jp < panels; ++jp)
                        sk(a + int64_t(o) * kMr * lda, lda, astep, std::min(kMr, ig - o * kMr),
                           depth, bpack.data() + int64_t(jp) * kpix * kNr,
                           c.data() + int64_t(o) * kMr * ldc + jp * kNr, ldc);
                continue;
            }
            // Each tap's own pixels alone, pixel by pixel in order.
            for (int r = 0; r < nr; ++r) {
                const int64_t iy = r0 + r;
                for (int ix = 0; ix < width; ++ix)
                    for (int ky = 0; ky < kh; ++ky) {
                        if (iy < ys[ky].lo || iy > ys[ky].hi) continue;
                        for (int oc = 0; oc < og; ++oc)
                            for (int kx = 0; kx < kw; ++kx) {
                                if (ix < xs[kx].lo || ix > xs[kx].hi) continue;
                                const int col = column(ky, oc, kx);
                                const float v = bpack[(col / kNr) * kpix * kNr +
                                                      (int64_t(r) * width + ix) * kNr + col % kNr];
                                const int64_t pixel = int64_t(r) * width + ix;
                                for (int ic = 0; ic < ig; ++ic)
                                    c[int64_t(ic) * ldc + col] += a[ic * lda + pixel * astep] * v;
                            }
                    }
            }
        }
    };
    for (int g = 0; g < p.groups; ++g) {
        sum_group(g, false);
        // B's zeros where a tap misses dY times an infinite or NaN x add NaN where nothing
        // should be added: a sum that is not finite is summed again, each tap over its own
        // pixels alone (rare; testing x for it cost an eighth of dcgan_out's dW).
        if (!all_finite(c.data(), int64_t(c.size()))) sum_group(g, true);
        for (int oc = 0; oc < og; ++oc)
            for (int ky = 0; ky < kh; ++ky)
                for (int kx = 0; kx < kw; ++kx) {
                    float* to = partial + ((int64_t(g) * og + oc) * taps + ky * kw + kx) * ig;
                    const float* from = c.data() + column(ky, oc, kx);
                    for (int ic = 0; ic < ig; ++ic) to[ic] = from[int64_t(ic) * ldc];
                }
    }
}

}  // namespace convt::cpu
