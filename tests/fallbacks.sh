#!/bin/sh
# The stream suites (and the signal suite, whose signalfd read ends in task
# work) again on the fallback paths that the kernel here would not take by
# itself: one buffer per receive (no recv bundles) and no DEFER_TASKRUN.  t_loop_create_or_skip() ORs IOU_TEST_LOOP_FLAGS into
# every test loop's flags (IOU_LOOP_NO_DEFER_TASKRUN = 1,
# IOU_LOOP_NO_RECV_BUNDLE = 2).
top=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
status=0
for flags in 2 3; do
	for suite in check_stream check_bufstream check_signal; do
		echo "== $suite with IOU_TEST_LOOP_FLAGS=$flags"
		IOU_TEST_LOOP_FLAGS=$flags "$top/tests/$suite"
		rc=$?
		[ "$rc" -eq 77 ] && exit 77
		[ "$rc" -ne 0 ] && status=1
	done
done
exit $status
