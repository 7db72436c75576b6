// Parse-only stand-in for Apple's <objc/runtime.h>: just the types and functions metal-cpp names.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef struct objc_class* Class;
struct objc_object {
    Class isa;
};
typedef struct objc_object* id;
typedef struct objc_selector* SEL;
typedef struct objc_object Protocol;

Class objc_lookUpClass(const char* name);
Protocol* objc_getProtocol(const char* name);
SEL sel_registerName(const char* str);

#ifdef __cplusplus
}
#endif
