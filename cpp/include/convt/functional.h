// Transposed convolution in PyTorch conventions, on the same core and backends.
#pragma once

#include <array>
#include <memory>

#include "convt/device.h"
#include "convt/tensor.h"

namespace convt {

namespace detail {
struct LayerWeights;
}

/// torch.nn.ConvTranspose2d arguments, per axis (y, x).
struct ConvTransposeOptions {
    std::array<int64_t, 2> stride{1, 1};
    std::array<int64_t, 2> padding{0, 0};
    std::array<int64_t, 2> output_padding{0, 0};
    std::array<int64_t, 2> dilation{1, 1};
    int64_t groups = 1;
};

/// A layer with PyTorch's weight layout [Cin, Cout/groups, kH, kW]; weights keep their dtype and
/// accumulation is float, so fp32 results match PyTorch's to ~1e-6. Weights are prepared once.
class ConvTransposeLayer {
 public:
    /// `weight` is viewed as (n=Cin, c=Cout/groups, h=kH, w=kW); `bias` (c=Cout) may be null.
    ConvTransposeLayer(Device device, const TensorView& weight, const TensorView* bias,
                       const ConvTransposeOptions& options);
    ~ConvTransposeLayer();

    int64_t in_channels() const { return in_channels_; }
    int64_t out_channels() const { return out_channels_; }
    DataType dtype() const { return dtype_; }
    /// Output (N, Cout, Ho, Wo) for an input of (N, Cin, H, W). `output_size` (Ho, Wo), if
    /// given, replaces output_padding as in PyTorch: each must lie in [min, min + stride - 1].
    std::array<int64_t, 4> output_shape(const TensorView& input,
                                        const std::array<int64_t, 2>* output_size = nullptr) const;
    /// Runs synchronously; `output` must have output_shape(input, output_size) and must not
    /// overlap `input`.
    void forward(const TensorView& input, const TensorView& output,
                 const std::array<int64_t, 2>* output_size = nullptr);
    /// Gradients for a forward on `input` whose output gradient is `grad_output`; each output is
    /// optional. grad_input is shaped like input, grad_weight like the weight (PyTorch layout),
    /// grad_bias has out_channels entries. dW and dB are summed in a fixed order.
    void backward(const TensorView& input, const TensorView& grad_output,
                  const TensorView* grad_input, const TensorView* grad_weight,
                  const TensorView* grad_bias);

 private:
    void check_grad_output(const TensorView& input, const TensorView& grad_output) const;
    template <typename T>
    void store_weight_gradient(const T* dw, const TensorView& gw, int64_t og, int64_t ig) const;

    Device device_;
    ConvTransposeOptions options_;
    int64_t in_channels_ = 0, out_channels_ = 0, kernel_h_ = 0, kernel_w_ = 0;
    DataType dtype_ = DataType::Float32;
    std::shared_ptr<detail::LayerWeights> weights_;
};

}  // namespace convt
