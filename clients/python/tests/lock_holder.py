"""Run as a subprocess by test_lock.py: takes a lock, reports its fence, then
(after the test has paused and resumed it) reports what it believes."""

from __future__ import annotations

import json
import sys

from fenced import fenced_write

from idem_client import Client, LockLost

#: How long the resumed holder gives its watchdog to notice the loss.
LOST_WAIT_S = 30.0


def main() -> None:
    url, name, resource, lease_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with Client.from_url(url) as client, client.lock(name, lease_ms=lease_ms) as lock:
        print(json.dumps({"fence": lock.fence}), flush=True)
        sys.stdin.readline()  # the test pauses us (SIGSTOP) and resumes us, then writes a line
        held_after_resume = lock.held
        try:
            lock.check()
            check_raised = False
        except LockLost:
            check_raised = True
        lost = lock.lost.wait(LOST_WAIT_S)
        written = fenced_write(client, resource, lock.fence, "from the paused holder")
        print(
            json.dumps(
                {"held": held_after_resume, "check_raised": check_raised, "lost": lost, "written": written}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
