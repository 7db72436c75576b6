// Umbrella header of convt's public C++ API.
#pragma once

#include "convt/convolution_transpose.h"
#include "convt/convolution_transpose_gradient.h"
#include "convt/data_source.h"
#include "convt/descriptor.h"
#include "convt/device.h"
#include "convt/functional.h"
#include "convt/geometry.h"
#include "convt/kernel_base.h"
#include "convt/serialization.h"
#include "convt/states.h"
#include "convt/tensor.h"
#include "convt/types.h"
