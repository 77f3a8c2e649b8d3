"""What the deploy tests (lease_test.py, nemesis_test.py) share: failing with a
message, and waiting on a condition with a deadline."""
import sys
import time


class Failure(SystemExit):
    pass


def fail(msg, prefix="FAIL"):
    print("%s: %s" % (prefix, msg), file=sys.stderr)
    raise Failure(1)


def wait_for(cond, timeout, what, prefix="FAIL", poll=0.05):
    """Returns once cond() is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll)
    fail("timed out waiting for " + what, prefix)
