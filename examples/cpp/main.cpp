// Embeds convt: the spec's 1-D worked example (§1.4) through the MPS-style API, then a
// PyTorch-convention layer. Exits non-zero if a value is wrong.
#include <convt/convt.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

int main() {
    using namespace convt;
    // 1 -> 1 channel, kernel 3x1, stride 2 along x; weights a, b, c = 10, 100, 1000 (OHWI).
    ConvolutionDescriptor desc;
    desc.kernel_width = 3, desc.kernel_height = 1;
    desc.input_feature_channels = 1, desc.output_feature_channels = 1;
    desc.stride_in_pixels_x = 2;
    auto source = std::make_shared<ArrayDataSource>(desc, std::vector<float>{10, 100, 1000},
                                                    std::vector<float>{}, DataType::Float32);
    Device device = default_device();
    ConvolutionTranspose kernel(device, source);

    std::vector<float> input{1, 2, 3, 4};
    Image src(TensorView::dense(input.data(), DataType::Float32, 1, 1, 1, 4));
    CommandBuffer cb(device);
    Image dst = kernel.encode(cb, src);  // default padding: SizeSame, 7 wide
    cb.commit();
    cb.wait_until_completed();

    const float want[] = {100, 2010, 200, 3020, 300, 4030, 400};
    const auto* got = static_cast<const float*>(dst.view().data);
    std::printf("device %s, destination width %lld:", device.name().c_str(),
                static_cast<long long>(dst.width()));
    int bad = dst.width() != 7;
    for (int i = 0; i < 7 && !bad; ++i) {
        std::printf(" %g", got[i]);
        bad |= got[i] != want[i];
    }
    std::printf("\n");

    // PyTorch conventions: weight [Cin=1][Cout=1][1][3], stride 2, padding 1 -> 7 wide, flipped.
    std::vector<float> w{1000, 100, 10}, out(7, NAN);
    ConvTransposeOptions options;
    options.stride = {1, 2};
    options.padding = {0, 1};
    ConvTransposeLayer layer(device, TensorView::dense(w.data(), DataType::Float32, 1, 1, 1, 3),
                             nullptr, options);
    layer.forward(TensorView::dense(input.data(), DataType::Float32, 1, 1, 1, 4),
                  TensorView::dense(out.data(), DataType::Float32, 1, 1, 1, 7));
    for (int i = 0; i < 7; ++i) bad |= out[i] != want[i];

    std::printf(bad ? "FAILED\n" : "OK\n");
    return bad;
}
