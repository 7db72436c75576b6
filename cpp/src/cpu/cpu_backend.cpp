// Native CPU backend. Stride is handled by phase decomposition: for each output column the
// taps that land on real (non-inserted) source pixels are found arithmetically, so no
// multiply ever touches an inserted zero and no col2im buffer exists. Each task owns one
// output row of one image, so results do not depend on the thread count.
#include <cstring>
#include <vector>

#include "../core/backend.h"
#include "../core/half.h"
#include "convt/device.h"
#include "neuron.h"
#include "thread_pool.h"

namespace convt::cpu {
namespace {

using detail::DeviceWeights;
using detail::PreparedWeights;

struct CpuWeights : DeviceWeights {
    std::vector<float> packed;  // [g][ky][kx][icl][ocl]: output channels innermost for SIMD
    std::vector<float> bias;    // [O], zeros when the layer has none
    std::vector<float> slopes;  // [O] PReLU
};

inline float load(const void* base, int32_t type, int64_t i) {
    return type == CONVT_TYPE_F16 ? detail::half_to_float(static_cast<const uint16_t*>(base)[i])
                                  : static_cast<const float*>(base)[i];
}

inline void store(void* base, int32_t type, int64_t i, float v) {
    if (type == CONVT_TYPE_F16)
        static_cast<uint16_t*>(base)[i] = detail::float_to_half(v);
    else
        static_cast<float*>(base)[i] = v;
}

// acc[x][oc] += sum_icl in[ix][icl] * w[icl][oc] over one run of columns sharing a tap.
template <bool kHalfAccumulator>
void accumulate_run(float* acc, int64_t acc_step, const float* in, int64_t count, const float* w,
                    int ig, int og) {
    for (int64_t j = 0; j < count; ++j) {
        float* __restrict a = acc + j * acc_step;
        const float* __restrict x = in + j * ig;
        for (int icl = 0; icl < ig; ++icl) {
            const float xv = x[icl];
            const float* __restrict wr = w + static_cast<int64_t>(icl) * og;
            if constexpr (kHalfAccumulator) {
                for (int oc = 0; oc < og; ++oc)
                    a[oc] = detail::round_to_half(std::fma(xv, wr[oc], a[oc]));
            } else {
                for (int oc = 0; oc < og; ++oc) a[oc] += xv * wr[oc];
            }
        }
    }
}

// First column index xx >= 0 whose expanded coordinate e0 + xx is a non-negative multiple of s.
inline int64_t first_phase_column(int64_t e0, int64_t s) {
    const int64_t start = e0 < 0 ? -e0 : 0;
    const int64_t r = (e0 + start) % s;
    return start + (r ? s - r : 0);
}

template <bool kHalfAccumulator>
void run_row(const ConvtParams& p, const CpuWeights& w, const void* src, void* dst, int64_t task,
             std::vector<float>& acc, std::vector<float>& row) {
    const int64_t n = task / p.clip_h, yy = task % p.clip_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int64_t clip_w = p.clip_w;
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * p.kernel_w;
    acc.resize(static_cast<size_t>(clip_w * og));
    row.resize(static_cast<size_t>(p.src_w) * ig);
    const auto ntype = static_cast<NeuronType>(p.neuron);

    for (int g = 0; g < p.groups; ++g) {
        const float* bias = w.bias.data() + static_cast<int64_t>(g) * og;
        for (int64_t xx = 0; xx < clip_w; ++xx)
            for (int oc = 0; oc < og; ++oc)
                acc[xx * og + oc] = kHalfAccumulator ? detail::round_to_half(bias[oc]) : bias[oc];

        for (int ky = 0; ky < p.kernel_h; ++ky) {
            const int64_t ey = p.first_tap_y + yy + static_cast<int64_t>(p.dilation_y) * ky;
            if (ey < 0 || ey % p.stride_y != 0 || ey / p.stride_y >= p.src_h) continue;
            const int64_t iy = ey / p.stride_y;
            // Gather the group's source row as [ix][icl] floats.
            const int64_t src_row = p.src_base + n * p.src_stride_n + iy * p.src_stride_h +
                                    static_cast<int64_t>(g) * ig * p.src_stride_c;
            for (int64_t ix = 0; ix < p.src_w; ++ix)
                for (int icl = 0; icl < ig; ++icl)
                    row[ix * ig + icl] =
                        load(src, p.src_type, src_row + ix * p.src_stride_w + icl * p.src_stride_c);

            for (int kx = 0; kx < p.kernel_w; ++kx) {
                const int64_t e0 = p.first_tap_x + static_cast<int64_t>(p.dilation_x) * kx;
                const int64_t xx0 = first_phase_column(e0, p.stride_x);
                if (xx0 >= clip_w) continue;
                const int64_t ix0 = (e0 + xx0) / p.stride_x;
                if (ix0 >= p.src_w) continue;
                const int64_t count =
                    std::min((clip_w - xx0 + p.stride_x - 1) / p.stride_x, p.src_w - ix0);
                const float* wk =
                    w.packed.data() +
                    ((static_cast<int64_t>(g) * taps + ky * p.kernel_w + kx) * ig) * og;
                accumulate_run<kHalfAccumulator>(acc.data() + xx0 * og, p.stride_x * og,
                                                 row.data() + ix0 * ig, count, wk, ig, og);
            }
        }

        const int64_t dst_row = p.dst_base + n * p.dst_stride_n + (p.clip_y + yy) * p.dst_stride_h +
                                p.clip_x * p.dst_stride_w;
        for (int oc = 0; oc < og; ++oc) {
            const int64_t ch = static_cast<int64_t>(g) * og + oc;
            const float slope = w.slopes.empty() ? 0.f : w.slopes[ch];
            for (int64_t xx = 0; xx < clip_w; ++xx) {
                const float v = apply_neuron(ntype, acc[xx * og + oc], p.neuron_a, p.neuron_b,
                                             p.neuron_c, slope);
                store(dst, p.dst_type, dst_row + ch * p.dst_stride_c + xx * p.dst_stride_w, v);
            }
        }
    }
}

class CpuBackend : public detail::Backend {
 public:
    std::string kind() const override { return "cpu"; }
    std::string name() const override {
        return "cpu (" + std::to_string(ThreadPool::instance().num_threads()) + " threads)";
    }

    std::unique_ptr<DeviceWeights> upload(const PreparedWeights& pw) override {
        auto w = std::make_unique<CpuWeights>();
        const int64_t og = pw.out_channels / pw.groups, ig = pw.in_per_group;
        const int64_t taps = pw.kernel_h * pw.kernel_w;
        w->packed.resize(pw.values.size());
        for (int64_t oc = 0; oc < pw.out_channels; ++oc) {
            const int64_t g = oc / og, ocl = oc % og;
            for (int64_t t = 0; t < taps; ++t)
                for (int64_t icl = 0; icl < ig; ++icl)
                    w->packed[((g * taps + t) * ig + icl) * og + ocl] =
                        pw.values[(oc * taps + t) * ig + icl];
        }
        w->bias = pw.bias.empty() ? std::vector<float>(static_cast<size_t>(pw.out_channels), 0.f)
                                  : pw.bias;
        if (pw.neuron.type == NeuronType::PReLU) w->slopes = pw.neuron.data;
        return w;
    }

    void forward(const ConvtParams& p, const DeviceWeights& weights, const void* src,
                 void* dst) override {
        const auto& w = static_cast<const CpuWeights&>(weights);
        const int64_t tasks = static_cast<int64_t>(p.num_images) * p.clip_h;
        if (tasks == 0 || p.clip_w == 0) return;
        ThreadPool::instance().parallel_for(tasks, [&](int64_t t) {
            thread_local std::vector<float> acc, row;
            if (p.accumulate_half)
                run_row<true>(p, w, src, dst, t, acc, row);
            else
                run_row<false>(p, w, src, dst, t, acc, row);
        });
    }
};

}  // namespace
}  // namespace convt::cpu

namespace convt {

namespace detail {
std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<cpu::CpuBackend>(); }
}  // namespace detail

void set_num_threads(int n) { cpu::ThreadPool::instance().set_num_threads(n); }
int get_num_threads() { return cpu::ThreadPool::instance().num_threads(); }

}  // namespace convt
