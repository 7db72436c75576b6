// Parse-only stand-in for Apple's <CoreFoundation/CoreFoundation.h>: only CFTimeInterval.
#pragma once

// The real umbrella header pulls in the C library's <math.h>; metal-cpp relies on that for
// INFINITY (MTLAccelerationStructureTypes.hpp).
#include <math.h>

typedef double CFTimeInterval;
