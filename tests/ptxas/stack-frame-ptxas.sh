#!/bin/sh
# A ptxas that reports a stack frame without spills: the ctest
# ptxas-stack-frame-is-a-failure runs the ptxas tests with it
# ($FLASHJIT_PTXAS) and requires them to fail. $REAL_PTXAS assembles.
"$REAL_PTXAS" "$@" || exit $?
echo "ptxas info    : Function properties for a_helper" >&2
echo "    16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" >&2
