#include "convt/types.h"

namespace convt {

std::string to_string(DataType t) {
    switch (t) {
        case DataType::Float32:
            return "float32";
        case DataType::Float16:
            return "float16";
        case DataType::UInt8:
            return "uint8";
        case DataType::Float64:
            return "float64";
    }
    return "unknown";
}

std::string to_string(NeuronType t) {
    static const char* names[] = {"none",         "relu",        "linear",    "sigmoid",
                                  "hard_sigmoid", "tanh",        "abs",       "softplus",
                                  "softsign",     "elu",         "prelu",     "relun",
                                  "power",        "exponential", "logarithm", "gelu"};
    auto i = static_cast<int>(t);
    return (i >= 0 && i < 16) ? names[i] : "unknown";
}

size_t element_size(DataType t) {
    switch (t) {
        case DataType::Float32:
            return 4;
        case DataType::Float16:
            return 2;
        case DataType::UInt8:
            return 1;
        case DataType::Float64:
            return 8;
    }
    return 0;
}

}  // namespace convt
