# Runs one example program and checks how it ends:
#   cmake -DPROGRAM=tram-xlmr "-DARGUMENTS=--optimizer nope" -DCODE=2 "-DEXPECTED=tram-prev" -P check_exit.cmake
# Fails unless the program exits with CODE and its output (stdout and stderr)
# contains EXPECTED.
separate_arguments(arguments UNIX_COMMAND "${ARGUMENTS}")
execute_process(COMMAND ${PROGRAM} ${arguments} RESULT_VARIABLE code OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(NOT code STREQUAL "${CODE}")
  message(FATAL_ERROR "${PROGRAM} ${ARGUMENTS} exited with ${code}, expected ${CODE}:\n${output}")
endif()
string(FIND "${output}" "${EXPECTED}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${PROGRAM} ${ARGUMENTS}: the output does not mention '${EXPECTED}':\n${output}")
endif()
message(STATUS "${PROGRAM} ${ARGUMENTS}: exit ${code}, mentions '${EXPECTED}'")
