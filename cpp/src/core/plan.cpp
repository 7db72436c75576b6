#include "plan.h"

#include <algorithm>

#include "check.h"

namespace convt::detail {

void check_zero_copy(const Backend& backend, const TensorView& view, const char* name) {
    if (view.device_memory && !backend.accepts_device_memory())
        throw std::invalid_argument(
            concat(name, " is CUDA device memory, and the ", backend.kind(),
                   " device reads host memory only; use device 'cuda' or copy it to the host"));
    if (view.require_zero_copy && !backend.uses_in_place(view) && backend.accepts_device_memory())
        throw std::invalid_argument(
            concat(name, " is host memory, which the ", backend.kind(),
                   " device would copy to the GPU, and copy=False forbids staging (copying) it; "
                   "pass a CUDA array (DLPack) instead"));
    if (view.require_zero_copy && !backend.uses_in_place(view))
        throw std::invalid_argument(
            concat(name, " memory must be page-aligned to be used in place by the ", backend.kind(),
                   " device, and copy=False forbids staging (copying) it; allocate it with "
                   "convt.empty_aligned()"));
}

void check_image_view(const char* name, const TensorView& view) {
    if (view.type != DataType::Float32 && view.type != DataType::Float16 &&
        view.type != DataType::Float64)
        throw TypeError(
            concat(name, " dtype must be float32 or float16, got ", to_string(view.type)));
    for (auto [axis, v] : {std::pair{"number_of_images", view.n},
                           {"feature_channels", view.c},
                           {"height", view.h},
                           {"width", view.w}})
        require_int32(concat(name, " ", axis).c_str(), v);
    if (view.numel() > 0 && view.data == nullptr)
        throw std::invalid_argument(concat(name, " data must not be null"));
    if (!view.span_fits())
        throw std::invalid_argument(concat(name, " strides must span less than 2^62 bytes"));
}

void check_destination_view(const char* name, const TensorView& view) {
    if (!view.writable)
        throw std::invalid_argument(concat(name, " must be writable, got a read-only array"));
    if (view.self_overlaps())
        throw std::invalid_argument(
            concat(name, " must not have elements that share memory (zero or overlapping "
                         "strides), got strides (",
                   view.stride_n, ", ", view.stride_c, ", ", view.stride_h, ", ", view.stride_w,
                   ") for shape (", view.n, ", ", view.c, ", ", view.h, ", ", view.w, ")"));
}

namespace {

int32_t type_code(DataType t) {
    switch (t) {
        case DataType::Float16:
            return CONVT_TYPE_F16;
        case DataType::Float64:
            return CONVT_TYPE_F64;
        default:
            return CONVT_TYPE_F32;
    }
}

int32_t narrow(const char* name, int64_t v) {
    require(v >= INT32_MIN && v <= INT32_MAX, name, v, "representable in 32 bits");
    return static_cast<int32_t>(v);
}

}  // namespace

ConvtParams make_params(const PreparedWeights& w, const Placement& pl, const TensorView& src,
                        const TensorView& dst, const ViewRoles& roles) {
    check_image_view(roles.source, src);
    check_image_view(roles.destination, dst);
    if (roles.destination_written) {
        check_destination_view(roles.destination, dst);
        if (dst.may_overlap(src))
            throw std::invalid_argument(concat(roles.destination, " must not share memory with ",
                                               roles.source, ", got overlapping arrays"));
    }

    const int64_t I = w.in_per_group * w.groups, O = w.out_channels;
    require(pl.source_channel_offset >= 0, "source_feature_channel_offset",
            pl.source_channel_offset, ">= 0");
    require(pl.source_channel_max_count >= 0, "source_feature_channel_max_count",
            pl.source_channel_max_count, ">= 0");
    require(pl.destination_channel_offset >= 0, "destination_feature_channel_offset",
            pl.destination_channel_offset, ">= 0");
    const int64_t slice = std::min(pl.source_channel_max_count,
                                   std::max<int64_t>(0, src.c - pl.source_channel_offset));
    if (slice < I)
        throw std::invalid_argument(
            concat("source feature channel slice must hold input_feature_channels (", I, "), got ",
                   slice, " (source feature channels ", src.c, ", source_feature_channel_offset ",
                   pl.source_channel_offset, ", source_feature_channel_max_count ",
                   pl.source_channel_max_count, ")"));
    if (pl.destination_channel_offset > dst.c - O)  // not dfo + O: that can overflow
        throw std::invalid_argument(
            concat("destination feature channels must be >= destination_feature_channel_offset + "
                   "output_feature_channels (",
                   pl.destination_channel_offset, " + ", O, "), got ", dst.c));
    if (pl.accumulator == AccumulatorPrecision::Half && w.type != DataType::Float16)
        throw std::invalid_argument(concat("accumulator_precision must be float with ",
                                           to_string(w.type), " kernel weights, got half"));

    const Region& c = pl.clip;
    for (auto [name, v] :
         {std::pair{"clip_rect.x", c.x}, {"clip_rect.y", c.y}, {"clip_rect.z", c.z}})
        require(v >= 0, name, v, ">= 0");
    for (auto [name, v] : {std::pair{"clip_rect.width", c.width},
                           {"clip_rect.height", c.height},
                           {"clip_rect.depth", c.depth}})
        require(v >= 1, name, v, ">= 1 (an empty clip_rect writes nothing)");
    if (dst.numel() > 0 && (c.x >= dst.w || c.y >= dst.h || c.z >= dst.n))
        throw std::invalid_argument(concat("clip_rect origin must lie inside the destination (",
                                           dst.w, "x", dst.h, ", ", dst.n, " images), got (", c.x,
                                           ", ", c.y, ", ", c.z, ")"));
    require(pl.source_image >= 0, "offset.z", pl.source_image, ">= 0");
    if (src.n > 0 && pl.source_image >= src.n)
        throw std::invalid_argument(concat("offset.z must be < source number_of_images (", src.n,
                                           "), got ", pl.source_image));

    ConvtParams p{};
    p.kernel_w = narrow("kernel_width", w.kernel_w);
    p.kernel_h = narrow("kernel_height", w.kernel_h);
    p.stride_x = narrow("stride_x", pl.stride_x);
    p.stride_y = narrow("stride_y", pl.stride_y);
    p.dilation_x = narrow("dilation_x", pl.dilation_x);
    p.dilation_y = narrow("dilation_y", pl.dilation_y);
    p.groups = narrow("groups", w.groups);
    p.in_channels = narrow("input_feature_channels", I);
    p.out_channels = narrow("output_feature_channels", O);
    p.in_per_group = static_cast<int32_t>(w.in_per_group);
    p.out_per_group = static_cast<int32_t>(O / w.groups);
    p.src_w = static_cast<int32_t>(src.w);
    p.src_h = static_cast<int32_t>(src.h);
    const int64_t keff_x = pl.dilation_x * (w.kernel_w - 1) + 1;
    const int64_t keff_y = pl.dilation_y * (w.kernel_h - 1) + 1;
    p.first_tap_x = narrow("total offset x (offset.x * stride + kernel_offset_x)",
                           pl.total_offset_x - (keff_x >> 1));
    p.first_tap_y = narrow("total offset y (offset.y * stride + kernel_offset_y)",
                           pl.total_offset_y - (keff_y >> 1));
    p.clip_x = static_cast<int32_t>(std::min(c.x, dst.w));
    p.clip_y = static_cast<int32_t>(std::min(c.y, dst.h));
    p.clip_w = static_cast<int32_t>(std::min(c.width, dst.w - p.clip_x));
    p.clip_h = static_cast<int32_t>(std::min(c.height, dst.h - p.clip_y));
    const int64_t dst_image = std::min(c.z, dst.n);
    p.num_images = static_cast<int32_t>(
        std::max<int64_t>(0, std::min({c.depth, dst.n - dst_image, src.n - pl.source_image})));
    p.src_channel_offset = static_cast<int32_t>(pl.source_channel_offset);
    p.dst_channel_offset = static_cast<int32_t>(pl.destination_channel_offset);
    p.neuron = static_cast<int32_t>(w.neuron.type);
    p.neuron_a = w.neuron.a, p.neuron_b = w.neuron.b, p.neuron_c = w.neuron.c;
    p.has_bias = w.bias.empty() ? 0 : 1;
    p.accumulate_half = pl.accumulator == AccumulatorPrecision::Half ? 1 : 0;
    p.src_type = type_code(src.type);
    p.dst_type = type_code(dst.type);
    p.weight_type = type_code(w.type);
    p.src_base = pl.source_image * src.stride_n + pl.source_channel_offset * src.stride_c;
    p.dst_base = dst_image * dst.stride_n + pl.destination_channel_offset * dst.stride_c;
    p.src_stride_n = src.stride_n, p.src_stride_c = src.stride_c;
    p.src_stride_h = src.stride_h, p.src_stride_w = src.stride_w;
    p.dst_stride_n = dst.stride_n, p.dst_stride_c = dst.stride_c;
    p.dst_stride_h = dst.stride_h, p.dst_stride_w = dst.stride_w;
    return p;
}

}  // namespace convt::detail
