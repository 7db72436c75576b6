// Checks the CPU GEMM micro-kernels the build picks (AVX2, NEON or portable) against a float64
// sum. The segment kernel: random segment lists, depths 0-40, B read packed or at a row stride,
// shifted A and B, several segments a tile, adding to C or overwriting it, and a C tile inside a
// wider row that must keep its other columns. The indirect kernel: random row offsets (repeated,
// out of order), depths 0-90, adding to C or overwriting it. The strided-A kernel: A's rows in
// place at any strides. The short-tile kernel: 1-5 rows over several panels, against float64 and
// bitwise against the full kernel; the short indirect kernel likewise. The strided-segment
// kernel: 1-6 rows in place over several panels, against float64 and bitwise against the
// segment kernels on the same A packed. Also checks the host fp16
// conversions (core/half.h), whose type differs on arm64 GCC. Built and run by
// tools/check_micro_kernel.sh, natively and (cross-compiled) under qemu for arm64, where the NEON
// kernels cannot run on this machine otherwise. Exit status 0: all agree.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../cpp/src/core/half.h"
#include "../cpp/src/cpu/micro_kernel.h"
#include "convt/device.h"

using convt::cpu::kMr;
using convt::cpu::kNr;
using convt::cpu::Segment;

namespace {
// Whether every element of c is within the float32 rounding bound of its float64 sum:
// terms x u x the sum of |terms| (bound); prints the first that is not.
bool agrees(const char* what, int trial, const std::vector<float>& c,
            const std::vector<double>& want, const std::vector<double>& bound, int terms) {
    for (size_t k = 0; k < c.size(); ++k) {
        const double tol = terms * 0x1p-24 * bound[k];
        if (!(std::fabs(double(c[k]) - want[k]) <= tol)) {
            std::printf("%s trial %d: c[%zu] = %.9g, want %.9g\n", what, trial, k, c[k], want[k]);
            return false;
        }
    }
    return true;
}

// The float64 sums' starting values: c's, or zero inside the tile (rows x cols) when it is
// overwritten; bound starts as their magnitudes.
void start_sums(const std::vector<float>& c, int rows, int cols, int64_t ldc, bool overwrite,
                std::vector<double>& want, std::vector<double>& bound) {
    want.assign(c.begin(), c.end());
    for (int i = 0; i < rows && overwrite; ++i)
        for (int j = 0; j < cols; ++j) want[i * ldc + j] = 0.0;
    bound.resize(c.size());
    for (size_t k = 0; k < c.size(); ++k) bound[k] = std::fabs(want[k]);
}

// A C tile of kMr rows ldc apart, random values.
template <typename Gen, typename Dist>
std::vector<float> random_tile(int64_t ldc, Gen& gen, Dist& value) {
    std::vector<float> c(size_t(kMr) * ldc);
    for (float& v : c) v = value(gen);
    return c;
}

// Adds the segments' products to the float64 sums of rows [0, rows) over `panels` B panels
// (panel q's at b + q * panel_stride), A packed [depth][kMr] at a + a_shift, B at b + b_shift.
void add_products(const std::vector<Segment>& segs, int64_t a_shift, int64_t b_shift,
                  int64_t panel_stride, int rows, int panels, int64_t ldc,
                  std::vector<double>& want, std::vector<double>& bound) {
    for (const Segment& seg : segs)
        for (int p = 0; p < seg.depth; ++p)
            for (int i = 0; i < rows; ++i)
                for (int j = 0; j < panels * kNr; ++j) {
                    const double t =
                        double(seg.a[a_shift + p * kMr + i]) *
                        double(seg.b[b_shift + j / kNr * panel_stride + p * seg.ldb + j % kNr]);
                    want[i * ldc + j] += t;
                    bound[i * ldc + j] += std::fabs(t);
                }
}

// Whether rows [0, rows) and columns [0, cols) of c equal those of full, bit for bit (a short
// tile against the full kernel's rows); prints the first that does not.
bool same_bits(const char* what, int trial, const std::vector<float>& c,
               const std::vector<float>& full, int rows, int cols, int64_t ldc) {
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j)
            if (c[i * ldc + j] != full[i * ldc + j]) {
                std::printf("%s trial %d: c[%d][%d] = %.9g, the full kernel's %.9g\n", what, trial,
                            i, j, c[i * ldc + j], full[i * ldc + j]);
                return false;
            }
    return true;
}
}  // namespace

int main() {
    std::mt19937 gen(12345);
    std::uniform_real_distribution<float> value(-1.f, 1.f);
    std::uniform_int_distribution<int> pick(0, 1 << 20);
    const convt::cpu::MicroKernel kernel = convt::cpu::micro_kernel();
    int failures = 0, cases = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int count = 1 + pick(gen) % 5;
        const int64_t a_shift = pick(gen) % 3 * kMr, b_shift = pick(gen) % 3;
        const int64_t ldc = kNr + pick(gen) % 9;
        std::vector<std::vector<float>> as(count), bs(count);
        std::vector<Segment> segs(count);
        for (int s = 0; s < count; ++s) {
            const int depth = pick(gen) % 41;
            const int64_t ldb = pick(gen) % 2 ? kNr : kNr + 1 + pick(gen) % 23;
            as[s].resize(size_t(depth + 3) * kMr);
            bs[s].resize(size_t(depth + 3) * ldb + kNr + 3);
            for (float& v : as[s]) v = value(gen);
            for (float& v : bs[s]) v = value(gen);
            segs[s] = {as[s].data(), bs[s].data(), depth, ldb};
        }
        std::vector<float> c(size_t(kMr) * ldc);
        for (float& v : c) v = value(gen);
        // Float64 sums, and the float32 rounding bound for each: (terms) x u x sum of |terms|.
        std::vector<double> want(c.begin(), c.end()), bound(c.size());
        const bool overwrite = trial % 2;  // then c's values are not part of the sum
        if (overwrite)  // the tile's elements; the row's other columns must keep theirs
            for (int i = 0; i < kMr; ++i)
                for (int j = 0; j < kNr; ++j) want[i * ldc + j] = 0.0;
        int terms = 1;
        for (int s = 0; s < count; ++s) terms += segs[s].depth;
        for (size_t k = 0; k < c.size(); ++k) bound[k] = std::fabs(want[k]);
        for (int s = 0; s < count; ++s)
            for (int p = 0; p < segs[s].depth; ++p)
                for (int i = 0; i < kMr; ++i)
                    for (int j = 0; j < kNr; ++j) {
                        const double t = double(segs[s].a[a_shift + p * kMr + i]) *
                                         double(segs[s].b[b_shift + p * segs[s].ldb + j]);
                        want[i * ldc + j] += t;
                        bound[i * ldc + j] += std::fabs(t);
                    }
        kernel(segs.data(), count, a_shift, b_shift, c.data(), ldc, overwrite);
        ++cases;
        if (!agrees("segment", trial, c, want, bound, terms)) ++failures;
    }
    std::printf("micro-kernel '%s': %d of %d cases agree\n", convt::cpu_kernel_isa().c_str(),
                cases - failures, cases);
    // The indirect kernel: B's rows found through an offset a step, anywhere in one buffer
    // (repeated, out of order), depths 0-90.
    const convt::cpu::IndirectKernel indirect = convt::cpu::indirect_kernel();
    int indirect_failures = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int depth = pick(gen) % 91;
        const int64_t ldc = kNr + pick(gen) % 9;
        std::vector<float> a(size_t(depth) * kMr), b(size_t(200 + kNr)), c(size_t(kMr) * ldc);
        std::vector<int64_t> rows(static_cast<size_t>(depth));
        for (float& v : a) v = value(gen);
        for (float& v : b) v = value(gen);
        for (float& v : c) v = value(gen);
        for (int64_t& r : rows) r = pick(gen) % 201;
        const bool overwrite = trial % 2;  // then c's values are not part of the sum
        std::vector<double> want(c.begin(), c.end()), bound(c.size());
        if (overwrite)  // the tile's elements; the row's other columns must keep theirs
            for (int i = 0; i < kMr; ++i)
                for (int j = 0; j < kNr; ++j) want[i * ldc + j] = 0.0;
        for (size_t k = 0; k < c.size(); ++k) bound[k] = std::fabs(want[k]);
        for (int p = 0; p < depth; ++p)
            for (int i = 0; i < kMr; ++i)
                for (int j = 0; j < kNr; ++j) {
                    const double t = double(a[p * kMr + i]) * double(b[rows[p] + j]);
                    want[i * ldc + j] += t;
                    bound[i * ldc + j] += std::fabs(t);
                }
        indirect(a.data(), rows.data(), depth, b.data(), c.data(), ldc, overwrite);
        if (!agrees("indirect", trial, c, want, bound, depth + 1)) ++indirect_failures;
    }
    std::printf("indirect kernel '%s': %d of 300 cases agree\n", convt::cpu_kernel_isa().c_str(),
                300 - indirect_failures);
    failures += indirect_failures;
    // The strided-A kernel: A's rows read in place (1-6 of them, the last repeated), a row
    // stride and a step that may be negative, depths 0-90; C's other columns must keep theirs.
    const convt::cpu::StridedAKernel strided = convt::cpu::strided_a_kernel();
    int strided_failures = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int depth = pick(gen) % 91, rows = 1 + pick(gen) % kMr;
        const int64_t ldc = kNr + pick(gen) % 9;
        const int64_t astep = (pick(gen) % 2 ? 1 : 1 + pick(gen) % 5) * (trial % 3 ? 1 : -1);
        const int64_t lda = (pick(gen) % 2 ? 1 : -1) * (1 + pick(gen) % 400);
        // Every element either stride reaches from the middle of the buffer.
        const int64_t reach = std::llabs(lda) * kMr + std::llabs(astep) * (depth + 1) + 1;
        std::vector<float> a(size_t(2 * reach)), b(size_t(depth) * kNr + 1), c(size_t(kMr) * ldc);
        for (float& v : a) v = value(gen);
        for (float& v : b) v = value(gen);
        for (float& v : c) v = value(gen);
        const float* a0 = a.data() + reach;
        std::vector<double> want(c.begin(), c.end()), bound(c.size());
        for (size_t k = 0; k < c.size(); ++k) bound[k] = std::fabs(want[k]);
        for (int p = 0; p < depth; ++p)
            for (int i = 0; i < kMr; ++i)
                for (int j = 0; j < kNr; ++j) {
                    const double t = double(a0[std::min(i, rows - 1) * lda + p * astep]) *
                                     double(b[p * kNr + j]);
                    want[i * ldc + j] += t;
                    bound[i * ldc + j] += std::fabs(t);
                }
        strided(a0, lda, astep, rows, depth, b.data(), c.data(), ldc);
        if (!agrees("strided", trial, c, want, bound, depth + 1)) ++strided_failures;
    }
    std::printf("strided-A kernel '%s': %d of 300 cases agree\n", convt::cpu_kernel_isa().c_str(),
                300 - strided_failures);
    failures += strided_failures;
    // The short-tile kernel (the portable one where the CPU has none): 1-5 rows of A's panels
    // over 1-8 B panels a stride apart, adding to C or overwriting it. The float64 sums, and
    // bitwise the full kernel's rows panel by panel; C's other rows and columns keep theirs.
    convt::cpu::ShortTileKernel short_tile = convt::cpu::short_tile_kernel();
    if (!short_tile) short_tile = convt::cpu::portable_short_tile_kernel();
    int short_failures = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int rows = 1 + pick(gen) % (kMr - 1), panels = 1 + pick(gen) % 8;
        const int count = 1 + pick(gen) % 4;
        const int64_t a_shift = pick(gen) % 3 * kMr, b_shift = pick(gen) % 3;
        const int64_t panel_stride = 2000 + pick(gen) % 17;  // past any segment's depth x ldb
        const int64_t ldc = panels * kNr + pick(gen) % 9;
        std::vector<std::vector<float>> as(count), bs(count);
        std::vector<Segment> segs(count);
        int terms = 1;
        for (int s = 0; s < count; ++s) {
            const int depth = pick(gen) % 41;
            const int64_t ldb = pick(gen) % 2 ? kNr : kNr + 1 + pick(gen) % 23;
            as[s].resize(size_t(depth + 3) * kMr);
            bs[s].resize(size_t(panels) * panel_stride + size_t(depth + 3) * ldb);
            for (float& v : as[s]) v = value(gen);
            for (float& v : bs[s]) v = value(gen);
            segs[s] = {as[s].data(), bs[s].data(), depth, ldb};
            terms += depth;
        }
        const bool overwrite = trial % 2;
        std::vector<float> c = random_tile(ldc, gen, value), full = c;
        std::vector<double> want, bound;
        start_sums(c, rows, panels * kNr, ldc, overwrite, want, bound);
        add_products(segs, a_shift, b_shift, panel_stride, rows, panels, ldc, want, bound);
        short_tile(segs.data(), count, a_shift, b_shift, panel_stride, rows, panels, c.data(), ldc,
                   overwrite);
        bool ok = agrees("short tile", trial, c, want, bound, terms);
        const convt::cpu::MicroKernel same =
            convt::cpu::short_tile_kernel() ? kernel : convt::cpu::portable_micro_kernel();
        for (int q = 0; q < panels; ++q)
            same(segs.data(), count, a_shift, b_shift + q * panel_stride, full.data() + q * kNr,
                 ldc, overwrite);
        ok = ok && same_bits("short tile", trial, c, full, rows, panels * kNr, ldc);
        if (!ok) ++short_failures;
    }
    std::printf("short-tile kernel '%s': %d of 300 cases agree\n",
                convt::cpu::short_tile_kernel() ? convt::cpu_kernel_isa().c_str() : "portable",
                300 - short_failures);
    failures += short_failures;
    // The short indirect kernel (the portable one where the CPU has none): 1-5 rows over 1-8
    // panels, each from its own base through the same offsets, depths 0-90. The float64 sums,
    // and bitwise the full indirect kernel's rows panel by panel.
    convt::cpu::ShortIndirectKernel short_indirect = convt::cpu::short_indirect_kernel();
    if (!short_indirect) short_indirect = convt::cpu::portable_short_indirect_kernel();
    const convt::cpu::IndirectKernel full_indirect =
        convt::cpu::short_indirect_kernel() ? indirect : convt::cpu::portable_indirect_kernel();
    int short_indirect_failures = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int depth = pick(gen) % 91, rows = 1 + pick(gen) % (kMr - 1);
        const int panels = 1 + pick(gen) % 8;
        const int64_t ldc = panels * kNr + pick(gen) % 9;
        std::vector<float> a(size_t(depth) * kMr), b(size_t(panels) * 300 + kNr);
        std::vector<float> c(size_t(kMr) * ldc);
        std::vector<int64_t> offsets(static_cast<size_t>(depth));
        std::vector<const float*> bases(static_cast<size_t>(panels));
        for (float& v : a) v = value(gen);
        for (float& v : b) v = value(gen);
        for (float& v : c) v = value(gen);
        for (int64_t& r : offsets) r = pick(gen) % 201;
        for (int q = 0; q < panels; ++q) bases[q] = b.data() + pick(gen) % (panels * 100);
        std::vector<float> full = c;
        const bool overwrite = trial % 2;
        std::vector<double> want, bound;
        start_sums(c, rows, panels * kNr, ldc, overwrite, want, bound);
        for (int p = 0; p < depth; ++p)
            for (int i = 0; i < rows; ++i)
                for (int j = 0; j < panels * kNr; ++j) {
                    const double t =
                        double(a[p * kMr + i]) * double(bases[j / kNr][offsets[p] + j % kNr]);
                    want[i * ldc + j] += t;
                    bound[i * ldc + j] += std::fabs(t);
                }
        short_indirect(a.data(), offsets.data(), depth, bases.data(), rows, panels, c.data(), ldc,
                       overwrite);
        bool ok = agrees("short indirect", trial, c, want, bound, depth + 1);
        for (int q = 0; q < panels; ++q)
            full_indirect(a.data(), offsets.data(), depth, bases[q], full.data() + q * kNr, ldc,
                          overwrite);
        ok = ok && same_bits("short indirect", trial, c, full, rows, panels * kNr, ldc);
        if (!ok) ++short_indirect_failures;
    }
    std::printf("short indirect kernel '%s': %d of 300 cases agree\n",
                convt::cpu::short_indirect_kernel() ? convt::cpu_kernel_isa().c_str() : "portable",
                300 - short_indirect_failures);
    failures += short_indirect_failures;
    // The strided-segment kernel: 1-6 rows of A read in place (a row stride and a step, either
    // sign), over 1-8 B panels a stride apart, several segments of depths 0-40, shifted A and
    // B, adding to C or overwriting it. The float64 sums, and bitwise the segment kernel's (the
    // short-tile kernel's, for fewer rows) on the same A packed; C's other rows and columns keep
    // theirs.
    const convt::cpu::StridedSegmentKernel strided_segments = convt::cpu::strided_segment_kernel();
    int strided_segment_failures = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int rows = 1 + pick(gen) % kMr, panels = 1 + pick(gen) % 8;
        const int count = 1 + pick(gen) % 4;
        const int64_t astep = (1 + pick(gen) % 4) * (trial % 3 ? 1 : -1);
        const int64_t lda = (pick(gen) % 2 ? 1 : -1) * (1 + pick(gen) % 300);
        const int64_t a_shift = (pick(gen) % 3) * lda, b_shift = pick(gen) % 3;
        const int64_t panel_stride = 2000 + pick(gen) % 17;  // past any segment's depth x ldb
        const int64_t ldc = panels * kNr + pick(gen) % 9;
        std::vector<std::vector<float>> as(count), bs(count), packs(count);
        std::vector<Segment> segs(count), packed(count);
        int terms = 1;
        for (int s = 0; s < count; ++s) {
            const int depth = pick(gen) % 41;
            const int64_t ldb = pick(gen) % 2 ? kNr : kNr + 1 + pick(gen) % 23;
            // Every element A(i, p) may reach from the middle of the buffer, a_shift included.
            const int64_t reach = std::llabs(lda) * (kMr + 3) + std::llabs(astep) * (depth + 1);
            as[s].resize(size_t(2 * reach + 1));
            bs[s].resize(size_t(panels) * panel_stride + size_t(depth + 3) * ldb);
            for (float& v : as[s]) v = value(gen);
            for (float& v : bs[s]) v = value(gen);
            segs[s] = {as[s].data() + reach, bs[s].data(), depth, ldb};
            packs[s].assign(size_t(depth) * kMr, 0.f);  // rows past `rows`: zeros, not summed
            for (int p = 0; p < depth; ++p)
                for (int i = 0; i < rows; ++i)
                    packs[s][p * kMr + i] = segs[s].a[a_shift + i * lda + p * astep];
            packed[s] = {packs[s].data(), bs[s].data(), depth, ldb};
            terms += depth;
        }
        const bool overwrite = trial % 2;
        std::vector<float> c = random_tile(ldc, gen, value), full = c;
        std::vector<double> want, bound;
        start_sums(c, rows, panels * kNr, ldc, overwrite, want, bound);
        add_products(packed, 0, b_shift, panel_stride, rows, panels, ldc, want, bound);
        strided_segments(segs.data(), count, a_shift, lda, astep, b_shift, panel_stride, rows,
                         panels, c.data(), ldc, overwrite);
        bool ok = agrees("strided segments", trial, c, want, bound, terms);
        // Rows past `rows` keep their values, as the comparison below needs.
        for (int i = rows; i < kMr; ++i)
            for (int j = 0; j < ldc; ++j) ok = ok && c[i * ldc + j] == full[i * ldc + j];
        if (rows < kMr)
            short_tile(packed.data(), count, 0, b_shift, panel_stride, rows, panels, full.data(),
                       ldc, overwrite);
        else
            for (int q = 0; q < panels; ++q)
                (convt::cpu::short_tile_kernel() ? kernel : convt::cpu::portable_micro_kernel())(
                    packed.data(), count, 0, b_shift + q * panel_stride, full.data() + q * kNr, ldc,
                    overwrite);
        ok = ok && same_bits("strided segments", trial, c, full, kMr, ldc, ldc);
        if (!ok) ++strided_segment_failures;
    }
    std::printf("strided-segment kernel '%s': %d of 300 cases agree\n",
                convt::cpu::use_avx2() ? "avx2" : "portable", 300 - strided_segment_failures);
    failures += strided_segment_failures;
    // fp16: value -> bits, ties to even, overflow to infinity, and back.
    struct Half {
        float value;
        uint16_t bits;
    };
    const Half halves[] = {{1.f, 0x3c00},
                           {-2.f, 0xc000},
                           {65504.f, 0x7bff},
                           {1.f + 0x1p-11f, 0x3c00},
                           {1.f + 0x3p-11f, 0x3c02},
                           {65520.f, 0x7c00},
                           {0x1p-24f, 0x0001}};
    int half_failures = 0;
    for (const Half& h : halves) {
        const uint16_t bits = convt::detail::float_to_half(h.value);
        if (bits != h.bits) {
            std::printf("float_to_half(%.9g) = 0x%04x, want 0x%04x\n", h.value, bits, h.bits);
            ++half_failures;
        }
    }
    if (convt::detail::half_to_float(0x3555) != 0x1.554p-2f) ++half_failures;
    std::printf("fp16 conversions: %s\n", half_failures ? "WRONG" : "agree");
    return failures == 0 && half_failures == 0 ? 0 : 1;
}
