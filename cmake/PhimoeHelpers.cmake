# Helpers shared by every component: warning flags for our own targets and one way to register tests.

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

# phimoe_add_library(<name> SOURCES ... DEPS ...)
function(phimoe_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  phimoe_target_defaults(${name})
endfunction()

# phimoe_add_executable(<name> SOURCES ... DEPS ...): lands in build/bin/.
function(phimoe_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  phimoe_target_defaults(${name})
endfunction()

# phimoe_add_test(<name> SOURCES ... DEPS ... LABELS unit|integration|gpu|slow ... [TIMEOUT s])
# One gtest binary, registered as one ctest test carrying the labels.
function(phimoe_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE PHIMOE_SHARED_DIR="${PHIMOE_SHARED_DIR}"
                                             PHIMOE_BIN_DIR="${CMAKE_RUNTIME_OUTPUT_DIRECTORY}")
  phimoe_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
