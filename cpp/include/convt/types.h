// Enumerations and small value types shared by the public API. Names follow MPS.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace convt {

/// A caller passed a value of the wrong type (maps to Python's TypeError).
/// std::invalid_argument (ValueError) is used for a wrong value.
class TypeError : public std::invalid_argument {
 public:
    using std::invalid_argument::invalid_argument;
};

/// Float64 is accepted by the PyTorch-convention API on the CPU (for gradient checking).
enum class DataType : int32_t { Float32 = 0, Float16 = 1, UInt8 = 2, Float64 = 3 };

enum class NeuronType : int32_t {
    None = 0,
    ReLU,
    Linear,
    Sigmoid,
    HardSigmoid,
    TanH,
    Absolute,
    SoftPlus,
    SoftSign,
    ELU,
    PReLU,
    ReLUN,
    Power,
    Exponential,
    Logarithm,
    GELU,
};

enum class AccumulatorPrecision : int32_t { Half = 0, Float = 1 };

enum class EdgeMode : int32_t { Zero = 0, Clamp = 1 };

enum class QuantizationType : int32_t { None = 0, Linear = 1, LookupTable = 2 };

/// MPSNNPaddingMethod bit values.
namespace padding_method {
constexpr uint32_t AlignCentered = 0x0;
constexpr uint32_t AlignTopLeft = 0x1;
constexpr uint32_t AlignBottomRight = 0x2;
constexpr uint32_t AlignMask = 0x3;
constexpr uint32_t AddRemainderToTopLeft = 0x0;
constexpr uint32_t AddRemainderToTopRight = 0x4;
constexpr uint32_t AddRemainderToBottomLeft = 0x8;
constexpr uint32_t AddRemainderToBottomRight = 0xC;
constexpr uint32_t SizeValidOnly = 0x00;
constexpr uint32_t SizeSame = 0x10;
constexpr uint32_t SizeFull = 0x20;
constexpr uint32_t SizeMask = 0x30;
constexpr uint32_t Custom = 0x4000;
constexpr uint32_t Default = SizeSame | AlignCentered | AddRemainderToTopLeft;
}  // namespace padding_method

/// MTLOrigin / MTLSize pair used for clipRect.
struct Region {
    int64_t x = 0, y = 0, z = 0;
    int64_t width = 0, height = 0, depth = 0;
    /// MPSRectNoClip: the whole destination.
    static Region no_clip() { return Region{0, 0, 0, INT64_MAX / 4, INT64_MAX / 4, INT64_MAX / 4}; }
    bool operator==(const Region& o) const {
        return x == o.x && y == o.y && z == o.z && width == o.width && height == o.height &&
               depth == o.depth;
    }
};

/// MPSOffset: x, y in source pixels, z the first source image.
struct Offset {
    int64_t x = 0, y = 0, z = 0;
};

std::string to_string(DataType t);
std::string to_string(NeuronType t);
size_t element_size(DataType t);

}  // namespace convt
