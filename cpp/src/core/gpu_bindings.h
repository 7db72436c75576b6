// The caller memory one GPU backend call binds, shared by the Metal and CUDA backends. With an open
// batch the bindings live in the batch: a region bound again is shared, so results flow from one
// dispatch to the next, and memory staged earlier in the batch that overlaps a new region is
// flushed first. Without one they belong to the call and are finished when it returns.
#pragma once

#include <memory>
#include <vector>

#include "convt/tensor.h"

namespace convt::detail::gpu {

/// `Binding` provides get(), staged(), same_region(first, bytes), overlaps(first, bytes) and
/// mark_written().
template <typename Binding>
class CallBindings {
 public:
    using List = std::vector<std::unique_ptr<Binding>>;

    /// `batch`: the open batch's bindings, or null.
    explicit CallBindings(List* batch) : batch_(batch) {}

    /// The bytes a view can touch; adds the element offset of its origin to `base`.
    static void extent(const TensorView& v, const char** first, size_t* bytes, int64_t* base) {
        const char* last;
        v.byte_extent(first, &last);
        *bytes = static_cast<size_t>(last - *first);
        if (v.numel())
            *base += (static_cast<const char*>(v.data) - *first) /
                     static_cast<int64_t>(element_size(v.type));
    }

    /// The binding of [first, first + bytes): the batch's, if it bound that region already,
    /// else make() after flush() when staged memory of the batch overlaps it.
    template <typename Make, typename Flush>
    auto region(const char* first, size_t bytes, bool written, Make&& make, Flush&& flush) {
        if (batch_) {
            for (auto& b : *batch_)
                if (b->same_region(first, bytes)) {
                    if (written) b->mark_written();
                    return b->get();
                }
            for (auto& b : *batch_)
                if (b->overlaps(first, bytes) && b->staged()) {
                    flush();
                    break;
                }
        }
        return add(make());
    }

    /// Keeps `binding` alive until the work is done.
    auto add(std::unique_ptr<Binding> binding) {
        List& list = batch_ ? *batch_ : own_;
        list.push_back(std::move(binding));
        return list.back()->get();
    }

    bool batched() const { return batch_ != nullptr; }
    /// The call's own bindings (none while a batch is open).
    List& own() { return own_; }

 private:
    List* batch_;
    List own_;
};

}  // namespace convt::detail::gpu
