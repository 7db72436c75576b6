// The interface every backend implements. Core talks to backends only through this.
#pragma once

#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../../../metal/convt_params.h"
#include "convt/descriptor.h"
#include "convt/tensor.h"

namespace convt::detail {

/// Weights after preparation (BN fold, dequantisation, precision rounding), in MPS's OHWI
/// layout [O][kH][kW][I/groups]. Values are exactly representable in `type`.
struct PreparedWeights {
    DataType type = DataType::Float16;  // what kernels read: Float32, Float16 (or Float64, CPU)
    int64_t out_channels = 0, kernel_h = 0, kernel_w = 0, in_per_group = 0, groups = 1;
    std::vector<double> values;
    std::vector<double> bias;  // empty: no bias
    NeuronDescriptor neuron;   // neuron.data: PReLU slopes per output channel
};

/// Backend-owned copy of a layer's weights (packed, or in device memory).
class DeviceWeights {
 public:
    virtual ~DeviceWeights() = default;
};

/// Where weight and bias gradients go: dense OHWI / [O] arrays of `type` (Float32 or Float64),
/// or, for backends whose writes_torch_gradients() is true, the caller's PyTorch-convention
/// views instead: dW [Cin][Cout/groups][kH][kW] with flipped taps, dB [1][O][1][1], each in its
/// own dtype and strides (host or device memory).
struct GradientOutput {
    void* weights = nullptr;  // null: not wanted
    void* bias = nullptr;     // null: not wanted
    DataType type = DataType::Float32;
    bool accumulate = false;  // add to what is there (batches) instead of overwriting
    const TensorView* weight_view = nullptr;  // instead of `weights`
    const TensorView* bias_view = nullptr;    // instead of `bias`

    bool wants_weights() const { return weights || weight_view; }
    bool wants_bias() const { return bias || bias_view; }
};

class Backend {
 public:
    virtual ~Backend() = default;
    virtual std::string kind() const = 0;
    virtual std::string name() const = 0;
    /// Float64 images and weights (PyTorch-convention API only): CPU yes, GPUs no.
    virtual bool supports_float64() const { return false; }
    /// Whether the view's memory can be used without a staging copy.
    virtual bool uses_in_place(const TensorView&) const { return true; }
    /// Whether views of GPU memory (TensorView::device_memory) can be used.
    virtual bool accepts_device_memory() const { return false; }
    /// Whether backward_weights() writes GradientOutput::weight_view/bias_view itself (the GPU
    /// backends finish them on the device); otherwise the core converts dense OHWI results.
    virtual bool writes_torch_gradients() const { return false; }
    /// A command buffer's device work between begin_batch() and flush() may be submitted as
    /// one batch on this thread; flush() runs it, waits, and throws on failure. Without an open
    /// batch every call runs at once.
    virtual void begin_batch() {}
    virtual void flush() {}
    /// Closes the batch (after the last flush, or dropping what a failure left unsubmitted).
    virtual void end_batch() {}
    virtual std::unique_ptr<DeviceWeights> upload(const PreparedWeights& weights) = 0;
    /// One forward dispatch. `params` hold the geometry and element strides; the views give the
    /// memory (base pointer and extent) they index from.
    virtual void forward(const ConvtParams& params, const DeviceWeights& weights,
                         const TensorView& src, const TensorView& dst) = 0;
    /// dX = transpose-gradient of dY. `params` has dX in the source role, dY in the destination
    /// role (same geometry as the forward). Every source pixel of the processed channels is
    /// written.
    virtual void backward_data(const ConvtParams& params, const DeviceWeights& weights,
                               const TensorView& dy, const TensorView& dx) = 0;
    /// dW and dB from X (source role) and dY (destination role), in a fixed reduction order.
    virtual void backward_weights(const ConvtParams& params, const TensorView& x,
                                  const TensorView& dy, const GradientOutput& out) = 0;
    /// backward_data(data_params, weights, dy, dx) and backward_weights(weight_params, x, dy,
    /// out) in one go, with the same results, where the backend can share their passes over
    /// dY. Returns false, having done nothing, where it cannot; the caller then makes both calls.
    virtual bool backward_data_and_weights(const ConvtParams& data_params,
                                           const DeviceWeights& weights, const TensorView& dy,
                                           const TensorView& dx, const ConvtParams& weight_params,
                                           const TensorView& x, const GradientOutput& out) {
        (void)data_params, (void)weights, (void)dy, (void)dx, (void)weight_params, (void)x,
            (void)out;
        return false;
    }
};

/// A layer's weights on the host and on its device. Encoded work reads them when it runs, so a
/// reload encoded in between is seen by the work after it; the mutex keeps a reload from racing
/// a running dispatch.
struct LayerWeights {
    PreparedWeights host;
    std::unique_ptr<DeviceWeights> device;
    mutable std::shared_mutex mutex;
};

std::shared_ptr<Backend> make_cpu_backend();

/// Throws std::invalid_argument when `backend` cannot read `view`'s memory (GPU memory on a host
/// device), or when `view` forbids copies (copy=False) and `backend` would have to stage it.
void check_zero_copy(const Backend& backend, const TensorView& view, const char* name);

/// Test aid: scratch buffers that a backend must overwrite start as NaN where this holds
/// (CONVT_POISON_SCRATCH=1, read at each call, so a test may set it for one call).
bool poison_scratch();

}  // namespace convt::detail
