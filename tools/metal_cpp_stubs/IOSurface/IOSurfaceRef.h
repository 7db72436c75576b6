// Parse-only stand-in for Apple's <IOSurface/IOSurfaceRef.h>: the opaque IOSurfaceRef handle.
#pragma once

typedef struct __IOSurface* IOSurfaceRef;
