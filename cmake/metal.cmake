# The Metal backend on macOS: metal-cpp (fetched at a pinned version and hash, or taken from
# CONVT_METAL_CPP_DIR), the kernels embedded as source (compiled at first use, so the Command
# Line Tools alone suffice) and, when `xcrun metal` exists, compiled ahead of time into
# convt.metallib, installed beside the Python module and preferred at run time.
set(CONVT_METAL_CPP_DIR "" CACHE PATH "metal-cpp headers (Foundation/, Metal/); fetched when empty")

if(NOT CONVT_METAL_CPP_DIR)
  include(FetchContent)
  # metal-cpp as shipped inside the mlx-metal 0.32.4 macOS wheel (a zip), pinned by hash.
  FetchContent_Declare(convt_metal_cpp
    URL https://files.pythonhosted.org/packages/77/24/7e5b7ed5d28abacab4577c7a8dd1fca6e9058504f5f95ae4333c09420e2e/mlx_metal-0.32.4-py3-none-macosx_14_0_arm64.whl
    URL_HASH SHA256=8019b2db622599267d66cc168b2f0dbf5af929790a6c3b3913e00eabc42a7947
    DOWNLOAD_NAME mlx_metal-0.32.4-macosx_14_0_arm64.zip  # a wheel is a zip archive
    DOWNLOAD_EXTRACT_TIMESTAMP TRUE)
  FetchContent_MakeAvailable(convt_metal_cpp)
  set(CONVT_METAL_CPP_DIR ${convt_metal_cpp_SOURCE_DIR}/mlx/include/metal_cpp)
endif()
if(NOT EXISTS ${CONVT_METAL_CPP_DIR}/Metal/Metal.hpp)
  message(FATAL_ERROR "CONVT_METAL_CPP_DIR=${CONVT_METAL_CPP_DIR} holds no Metal/Metal.hpp")
endif()

target_sources(convt PRIVATE
  cpp/src/metal/metal_backend.cpp
  cpp/src/metal/metal_cpp_impl.cpp
  ${CONVT_KERNEL_SOURCE_CPP})
target_include_directories(convt PRIVATE ${CONVT_METAL_CPP_DIR})
target_compile_definitions(convt PRIVATE CONVT_HAS_METAL=1)
target_link_libraries(convt PUBLIC "-framework Metal" "-framework Foundation")

find_program(CONVT_XCRUN xcrun)
if(CONVT_XCRUN)
  execute_process(COMMAND ${CONVT_XCRUN} -sdk macosx -f metal
                  OUTPUT_VARIABLE _metal_compiler ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()
if(_metal_compiler)
  # Apple's compiler checks every kernel at build time (no fast math: parity tests need IEEE).
  set(_air_files)
  foreach(_kernel ${CONVT_KERNELS})
    get_filename_component(_stem ${_kernel} NAME_WE)
    set(_air ${CMAKE_CURRENT_BINARY_DIR}/${_stem}.air)
    add_custom_command(OUTPUT ${_air}
      COMMAND ${_metal_compiler} -c -fno-fast-math -I ${CMAKE_CURRENT_SOURCE_DIR}/metal
              ${_kernel} -o ${_air}
      DEPENDS ${_kernel} ${CONVT_KERNEL_HEADERS})
    list(APPEND _air_files ${_air})
  endforeach()
  add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/convt.metallib
    COMMAND ${CONVT_XCRUN} -sdk macosx metallib ${_air_files} -o ${CMAKE_CURRENT_BINARY_DIR}/convt.metallib
    DEPENDS ${_air_files})
  add_custom_target(convt_metallib ALL DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/convt.metallib)
  # Loaded from next to the binary holding the backend (the Python module); a binary without it
  # beside it compiles the embedded source instead.
  target_compile_definitions(convt PRIVATE CONVT_HAS_METALLIB=1)
  if(SKBUILD)
    install(FILES ${CMAKE_CURRENT_BINARY_DIR}/convt.metallib DESTINATION convt)
  endif()
endif()
