"""``python tests/kill_after_epoch.py N ARGS...``: ``fastsnn ARGS...`` in a process that SIGKILLs itself
once the epoch checkpoint of epoch N is saved (fault injection for the resume tests)."""

import os
import signal
import sys

import fastsnn.experiment.run as run
from fastsnn.experiment.cli import main

after_epoch = int(sys.argv[1])
save_epoch = run._save_epoch


def save_then_die(out, state):
    save_epoch(out, state)
    if len(state["result"]["history"]) - 1 == after_epoch:
        os.kill(os.getpid(), signal.SIGKILL)


run._save_epoch = save_then_die
raise SystemExit(main(sys.argv[2:]))
