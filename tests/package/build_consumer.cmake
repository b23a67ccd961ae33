# Configures, builds and runs the consumer project in one ctest step.
# Inputs: MODE (find_package | add_subdirectory), SOURCE, BINARY, TRAM_SOURCE,
# PREFIX (the install prefix for find_package), Torch_DIR, CMAKE_BUILD_TYPE,
# and RUN_ARGUMENTS (optional) for the consumer program.
file(REMOVE_RECURSE ${BINARY})
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY}
          -DCONSUME_MODE=${MODE} -DTRAM_SOURCE=${TRAM_SOURCE}
          -DCMAKE_PREFIX_PATH=${PREFIX} -DTorch_DIR=${Torch_DIR}
          -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}
  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "consumer (${MODE}) failed to configure:\n${out}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} -j2
  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "consumer (${MODE}) failed to build:\n${out}")
endif()
execute_process(COMMAND ${BINARY}/consumer ${RUN_ARGUMENTS} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
message(STATUS "${out}")
if(NOT result EQUAL 0)
  message(FATAL_ERROR "consumer (${MODE}) ran but failed (${result}):\n${out}")
endif()
