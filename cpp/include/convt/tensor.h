// Strided 4-D views over caller memory (N, C, H, W) and owning images.
#pragma once

#include <cstdint>
#include <memory>

#include "convt/types.h"

namespace convt {

enum class Layout : int32_t { NCHW = 0, NHWC = 1 };

/// A non-owning view. Strides are in elements and may be any value, negative included, so
/// NCHW, NHWC and sliced views need no copy.
struct TensorView {
    void* data = nullptr;
    DataType type = DataType::Float32;
    int64_t n = 0, c = 0, h = 0, w = 0;
    int64_t stride_n = 0, stride_c = 0, stride_h = 0, stride_w = 0;
    bool writable = true;
    /// Set when the caller forbids staging copies (Python's copy=False): a device that cannot
    /// use this memory in place (Metal needs page-aligned memory) raises instead of copying.
    bool require_zero_copy = false;
    /// The memory is a GPU's (a DLPack tensor on a CUDA device), not the host's: only a device
    /// that reads GPU memory (cuda) may use it.
    bool device_memory = false;

    int64_t numel() const { return n * c * h * w; }
    /// [first, last) byte addresses the view can touch; empty views give first == last.
    void byte_extent(const char** first, const char** last) const;
    /// True when the byte ranges of the two views overlap (conservative).
    bool may_overlap(const TensorView& other) const;
    /// False when the strides reach further than 2^62 bytes from data (hostile views, e.g. from
    /// numpy's as_strided): address arithmetic on such a view would overflow.
    bool span_fits() const;
    /// True when two elements may share memory (e.g. a zero stride on an axis longer than 1):
    /// writing such a view is ill-defined. Conservative: sorted by |stride|, every axis must
    /// step past the extent of the smaller ones.
    bool self_overlaps() const;
    /// A dense view of `data` in `layout`.
    static TensorView dense(void* data, DataType type, int64_t n, int64_t c, int64_t h, int64_t w,
                            Layout layout = Layout::NCHW);
};

/// An MPSImage analogue for C++ callers: a view plus (optionally) the storage it owns.
class Image {
 public:
    Image() = default;
    /// Wraps caller memory; the caller keeps it alive.
    explicit Image(TensorView view) : view_(view) {}
    /// Allocates zero-filled storage.
    static Image allocate(int64_t number_of_images, int64_t feature_channels, int64_t height,
                          int64_t width, DataType type = DataType::Float32,
                          Layout layout = Layout::NCHW);

    const TensorView& view() const { return view_; }
    int64_t width() const { return view_.w; }
    int64_t height() const { return view_.h; }
    int64_t feature_channels() const { return view_.c; }
    int64_t number_of_images() const { return view_.n; }

 private:
    TensorView view_;
    std::shared_ptr<void> storage_;
};

}  // namespace convt
