// Parse-only stand-in for Apple's <objc/message.h>: the message-send entry points metal-cpp casts.
#pragma once

#include <objc/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

// Declared without a prototype, as with OBJC_OLD_DISPATCH_PROTOTYPES=0: callers must cast.
void objc_msgSend(void);
void objc_msgSend_stret(void);
void objc_msgSend_fpret(void);

#ifdef __cplusplus
}
#endif
