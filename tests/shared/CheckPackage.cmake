cmake_minimum_required(VERSION 3.20)
# Installs the library component into a fresh prefix, then builds and runs
# a C program that finds it with find_package(flashjit) and links
# flashjit::flashjit.
#   -DBUILD_DIR=<flashjit build> -DSOURCE=<tests/shared/package> -DWORK=<dir>
file(REMOVE_RECURSE ${WORK})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
    ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${ARGN} failed (${rc}):\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --component library
    --prefix ${WORK}/prefix)
foreach(file include/flashjit/flashjit.h)
  if(NOT EXISTS ${WORK}/prefix/${file})
    message(FATAL_ERROR "not installed: ${file}")
  endif()
endforeach()
run(${CMAKE_COMMAND} -S ${SOURCE} -B ${WORK}/consumer
    -DCMAKE_PREFIX_PATH=${WORK}/prefix)
run(${CMAKE_COMMAND} --build ${WORK}/consumer)
run(${WORK}/consumer/use_flashjit)
message(STATUS "find_package(flashjit) from the installed prefix: "
  "${last_output}")
