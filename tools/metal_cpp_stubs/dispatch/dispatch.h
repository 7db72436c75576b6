// Parse-only stand-in for Apple's <dispatch/dispatch.h>: opaque queue and data handles.
#pragma once

typedef struct dispatch_queue_s* dispatch_queue_t;
typedef struct dispatch_data_s* dispatch_data_t;
