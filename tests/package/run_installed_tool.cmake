# Runs the installed tram-trace on one committed case with LD_LIBRARY_PATH
# unset and checks that it writes a trace (docs/TRACE.md) of the case's steps.
# Inputs: TOOL (<prefix>/bin/tram-trace), CASE (a tests/trace/cases/*.json).
if(NOT EXISTS "${TOOL}")
  message(FATAL_ERROR "tram-trace is not installed: ${TOOL} does not exist")
endif()
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH "${TOOL}" "${CASE}"
  RESULT_VARIABLE result OUTPUT_VARIABLE trace ERROR_VARIABLE err)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "installed tram-trace failed (${result}) without LD_LIBRARY_PATH:\n${err}")
endif()
string(JSON tool ERROR_VARIABLE json_error GET "${trace}" tool)
if(json_error)
  message(FATAL_ERROR "installed tram-trace wrote no JSON trace (${json_error}):\n${trace}")
endif()
if(NOT tool STREQUAL "tram-trace")
  message(FATAL_ERROR "trace field 'tool' is '${tool}', expected 'tram-trace'")
endif()
file(READ "${CASE}" case_json)
string(JSON expected GET "${case_json}" steps)
string(JSON steps ERROR_VARIABLE json_error LENGTH "${trace}" steps)
if(json_error OR NOT steps EQUAL expected)
  message(FATAL_ERROR "trace has ${steps} steps (${json_error}), the case asks for ${expected}")
endif()
message(STATUS "installed tram-trace: ${steps} steps of ${CASE}")
