# Helpers shared by every component: warning flags for our own targets, per-folder include roots
# (the layering is enforced by the build), and one way to register tests.

set(PHIMOE_WARNING_FLAGS -Wall -Wextra -Wno-unused-parameter)
if(PHIMOE_WERROR)
  list(APPEND PHIMOE_WARNING_FLAGS -Werror)
endif()
set(PHIMOE_SANITIZER_FLAGS "")
if(PHIMOE_SANITIZE)
  set(PHIMOE_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
endif()

# phimoe_target_defaults(<target>): warnings (C++ only) and sanitizers on one of our targets.
function(phimoe_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${PHIMOE_WARNING_FLAGS}>)
  if(PHIMOE_SANITIZE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${PHIMOE_SANITIZER_FLAGS}>)
    target_link_options(${target} PRIVATE ${PHIMOE_SANITIZER_FLAGS})
  endif()
endfunction()

# Include roots. Every header is included by its path from the repository root
# ("common/status.h", "router/placement.h"), but no target sees the whole root: each top-level
# folder gets a root of its own, build/include_roots/<folder>/, holding one link <folder> → the
# source folder, and a target sees its own folder's root plus those of the targets it links. So a
# file that includes another folder's header without its target linking that folder's library
# does not compile: the folder graph in the README is what the build allows.
function(phimoe_folder_include_root folder out_var)
  set(root "${CMAKE_BINARY_DIR}/include_roots/${folder}")
  if(NOT EXISTS "${root}/${folder}")
    file(MAKE_DIRECTORY "${root}")
    file(CREATE_LINK "${CMAKE_SOURCE_DIR}/${folder}" "${root}/${folder}" SYMBOLIC)
  endif()
  set(${out_var} "${root}" PARENT_SCOPE)
endfunction()

# The top-level folder of the CMakeLists.txt being read ("tools" for tools/cli).
function(phimoe_current_folder out_var)
  file(RELATIVE_PATH rel "${CMAKE_SOURCE_DIR}" "${CMAKE_CURRENT_SOURCE_DIR}")
  string(REGEX REPLACE "/.*" "" top "${rel}")
  set(${out_var} "${top}" PARENT_SCOPE)
endfunction()

# Gives <target> its own folder's include root (PUBLIC for libraries: their users include them).
function(phimoe_own_folder target scope)
  phimoe_current_folder(folder)
  phimoe_folder_include_root("${folder}" root)
  target_include_directories(${target} ${scope} "${root}")
endfunction()

# phimoe_add_library(<name> SOURCES ... DEPS ...)
function(phimoe_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  phimoe_own_folder(${name} PUBLIC)
  phimoe_target_defaults(${name})
endfunction()

# phimoe_add_executable(<name> SOURCES ... DEPS ...): lands in build/bin/.
function(phimoe_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  phimoe_own_folder(${name} PRIVATE)
  phimoe_target_defaults(${name})
endfunction()

# phimoe_add_test(<name> SOURCES ... DEPS ... LABELS unit|integration|gpu|slow ... [TIMEOUT s])
# One gtest binary, registered as one ctest test carrying the labels.
function(phimoe_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  # phimoe_common for its test matchers (common/status_matchers.h), which any test may use.
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} phimoe_common GTest::gmock GTest::gtest
                                        GTest::gtest_main)
  phimoe_own_folder(${name} PRIVATE)
  target_compile_definitions(${name} PRIVATE PHIMOE_SHARED_DIR="${PHIMOE_SHARED_DIR}"
                                             PHIMOE_BIN_DIR="${CMAKE_RUNTIME_OUTPUT_DIRECTORY}")
  phimoe_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
