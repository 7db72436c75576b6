#include "convt/tensor.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "check.h"

namespace convt {

void TensorView::byte_extent(const char** first, const char** last) const {
    const char* base = static_cast<const char*>(data);
    if (numel() == 0) {
        *first = *last = base;
        return;
    }
    int64_t lo = 0, hi = 0;
    for (auto [size, stride] :
         {std::pair{n, stride_n}, {c, stride_c}, {h, stride_h}, {w, stride_w}}) {
        const int64_t span = (size - 1) * stride;
        (span < 0 ? lo : hi) += span;
    }
    const auto item = static_cast<int64_t>(element_size(type));
    *first = base + lo * item;
    *last = base + (hi + 1) * item;
}

bool TensorView::may_overlap(const TensorView& other) const {
    const char *a0, *a1, *b0, *b1;
    byte_extent(&a0, &a1);
    other.byte_extent(&b0, &b1);
    return a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1;
}

bool TensorView::span_fits() const {
    if (numel() == 0) return true;
    __int128 span = 0;
    for (auto [size, stride] :
         {std::pair{n, stride_n}, {c, stride_c}, {h, stride_h}, {w, stride_w}}) {
        if (size < 0) return false;
        span += static_cast<__int128>(size - 1) * (stride < 0 ? -static_cast<__int128>(stride)
                                                               : static_cast<__int128>(stride));
    }
    return (span + 1) * static_cast<__int128>(element_size(type)) <= (__int128{1} << 62);
}

bool TensorView::self_overlaps() const {
    if (numel() <= 1) return false;
    std::array<std::pair<__int128, int64_t>, 4> axes{{{stride_n, n}, {stride_c, c},
                                                      {stride_h, h}, {stride_w, w}}};
    for (auto& [stride, size] : axes) stride = stride < 0 ? -stride : stride;
    std::sort(axes.begin(), axes.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    __int128 extent = 0;  // elements spanned by the smaller axes, minus one
    for (const auto& [stride, size] : axes) {
        if (size == 1) continue;
        if (stride <= extent) return true;
        extent += (size - 1) * stride;
    }
    return false;
}

TensorView TensorView::dense(void* data, DataType type, int64_t n, int64_t c, int64_t h, int64_t w,
                             Layout layout) {
    TensorView v;
    v.data = data;
    v.type = type;
    v.n = n, v.c = c, v.h = h, v.w = w;
    if (layout == Layout::NCHW) {
        v.stride_w = 1, v.stride_h = w, v.stride_c = h * w, v.stride_n = c * h * w;
    } else {
        v.stride_c = 1, v.stride_w = c, v.stride_h = w * c, v.stride_n = h * w * c;
    }
    return v;
}

Image Image::allocate(int64_t number_of_images, int64_t feature_channels, int64_t height,
                      int64_t width, DataType type, Layout layout) {
    for (auto [name, v] : {std::pair{"number_of_images", number_of_images},
                           {"feature_channels", feature_channels},
                           {"height", height},
                           {"width", width}})
        detail::require_int32(name, v);
    const int64_t count = number_of_images * feature_channels * height * width;
    detail::require(count <= INT64_MAX / 8, "image element count", count, "addressable");
    std::shared_ptr<void> storage(std::calloc(static_cast<size_t>(count) + 1, element_size(type)),
                                  std::free);
    if (!storage) throw std::bad_alloc();
    Image image(TensorView::dense(storage.get(), type, number_of_images, feature_channels, height,
                                  width, layout));
    image.storage_ = std::move(storage);
    return image;
}

}  // namespace convt
