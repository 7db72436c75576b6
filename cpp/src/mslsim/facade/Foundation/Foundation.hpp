// metal-cpp-compatible facade (Linux simulation): exactly the Foundation subset the Metal
// backend uses, with metal-cpp's names and signatures. Objects are reference counted like
// NS::Object; autorelease pools release what was autoreleased inside them.
#pragma once

#include <cstdint>
#include <string>

#define NS_PRIVATE_IMPLEMENTATION_FACADE 1

namespace NS {

using UInteger = unsigned long;
using Integer = long;

enum StringEncoding : UInteger { UTF8StringEncoding = 4 };

class Object {
   public:
    virtual ~Object() = default;
    Object* retain();
    void release();
    Object* autorelease();

   private:
    long refs_ = 1;
};

template <typename T>
class Referencing : public Object {
   public:
    T* retain() { return static_cast<T*>(Object::retain()); }
    T* autorelease() { return static_cast<T*>(Object::autorelease()); }
};

class String : public Referencing<String> {
   public:
    static String* string(const char* utf8, StringEncoding encoding);
    const char* utf8String() const { return value_.c_str(); }
    explicit String(std::string v) : value_(std::move(v)) {}

   private:
    std::string value_;
};

class Error : public Referencing<Error> {
   public:
    explicit Error(std::string message) : message_(String::string(message.c_str(), UTF8StringEncoding)) {}
    String* localizedDescription() const { return message_; }

   private:
    String* message_;
};

class AutoreleasePool : public Referencing<AutoreleasePool> {
   public:
    static AutoreleasePool* alloc();
    AutoreleasePool* init();
    ~AutoreleasePool() override;
};

}  // namespace NS
