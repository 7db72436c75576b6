// Index arithmetic shared by the CPU paths: where a tap of a transposed convolution lands.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../../metal/convt_params.h"

namespace convt::cpu {

inline int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && (a < 0)); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t pos_mod(int64_t a, int64_t b) {
    const int64_t r = a % b;
    return r < 0 ? r + b : r;
}

// The destination rows (or columns) r, r + s, ... of the clip: the taps that land on source
// pixels there, each with its source index at the first of them (+1 per step of the phase).
struct Phase {
    int64_t r = 0, count = 0;
    std::vector<int> taps;
    std::vector<int64_t> first_source;
};

inline Phase phase_of(int64_t r, int64_t s, int64_t clip, int64_t first_tap, int64_t dilation,
                      int kernel) {
    Phase ph;
    ph.r = r;
    ph.count = ceil_div(clip - r, s);
    for (int k = 0; k < kernel; ++k) {
        const int64_t e = first_tap + r + dilation * k;
        if (pos_mod(e, s) != 0) continue;
        ph.taps.push_back(k);
        ph.first_source.push_back(floor_div(e, s));
    }
    return ph;
}

// First column index xx >= 0 whose expanded coordinate e0 + xx is a non-negative multiple of s.
inline int64_t first_phase_column(int64_t e0, int64_t s) {
    const int64_t start = e0 < 0 ? -e0 : 0;
    const int64_t r = (e0 + start) % s;
    return start + (r ? s - r : 0);
}

// The run of destination columns xx0, xx0 + s, ... (count of them) that tap kx reaches with
// source columns ix0, ix0 + 1, ...; count == 0 when none.
struct ColumnRun {
    int64_t xx0 = 0, ix0 = 0, count = 0;
};

inline ColumnRun column_run(const ConvtParams& p, int kx) {
    ColumnRun r;
    const int64_t e0 = p.first_tap_x + static_cast<int64_t>(p.dilation_x) * kx;
    r.xx0 = first_phase_column(e0, p.stride_x);
    if (r.xx0 >= p.clip_w) return r;
    r.ix0 = (e0 + r.xx0) / p.stride_x;
    if (r.ix0 >= p.src_w) return r;
    r.count = std::min((p.clip_w - r.xx0 + p.stride_x - 1) / p.stride_x, p.src_w - r.ix0);
    return r;
}

// Source row reached by tap ky from destination row yy (relative to the clip), or -1.
inline int64_t source_row(const ConvtParams& p, int64_t yy, int ky) {
    const int64_t ey = p.first_tap_y + yy + static_cast<int64_t>(p.dilation_y) * ky;
    if (ey < 0 || ey % p.stride_y != 0 || ey / p.stride_y >= p.src_h) return -1;
    return ey / p.stride_y;
}

inline int64_t dst_index(const ConvtParams& p, int64_t n, int64_t ch, int64_t yy, int64_t xx) {
    return p.dst_base + n * p.dst_stride_n + ch * p.dst_stride_c +
           (p.clip_y + yy) * p.dst_stride_h + (p.clip_x + xx) * p.dst_stride_w;
}

inline int64_t src_index(const ConvtParams& p, int64_t n, int64_t ch, int64_t iy, int64_t ix) {
    return p.src_base + n * p.src_stride_n + ch * p.src_stride_c + iy * p.src_stride_h +
           ix * p.src_stride_w;
}

// Source indices i (within [0, src)) whose destination i * s - c lies inside [0, clip): the
// pixels one tap reaches, for the gradients. Empty when lo > hi.
struct Span {
    int64_t lo, hi;
};

inline Span source_span(int64_t c, int64_t s, int64_t clip, int64_t src) {
    return {std::max<int64_t>(0, -floor_div(-c, s)),
            std::min<int64_t>(src - 1, floor_div(clip - 1 + c, s))};
}

}  // namespace convt::cpu
