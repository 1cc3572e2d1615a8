#!/bin/sh
# The taskflow command line on a SQLite store filled by examples/cli_tasks.py.
# Run from any directory: sh examples/cli_walkthrough.sh  (creates tasks.db there)
set -e
export TASKFLOW_BACKEND=sqlite:///tasks.db

# An app ran some tasks: three e-mails sent, a card charge FAILED, an inventory sync
# PENDING (its retry is due in an hour). The script prints "name task-id" lines.
python "$(dirname "$0")/cli_tasks.py" "$TASKFLOW_BACKEND" > ids.txt
CHARGE=$(awk '$1 == "charge" {print $2}' ids.txt)
SYNC=$(awk '$1 == "sync" {print $2}' ids.txt)

taskflow check                                  # reachable, schema version current
taskflow list                                   # newest first
taskflow list --status failed --json            # for scripts
taskflow list --func send_email --tag customer=ada --since 1h
taskflow show "$CHARGE"                         # fields, arguments, error, logs
taskflow logs "$CHARGE" --no-tracebacks
taskflow stats
taskflow cancel "$SYNC"                         # PENDING -> CANCELLED: it never runs
taskflow retry "$CHARGE"                        # FAILED -> PENDING, on its queue again
taskflow retry --all-failed --func charge_card  # nothing FAILED is left: retries 0
taskflow watch --once                           # one frame of the live view
taskflow purge --older-than 0s                  # every finished task (here: 3 e-mails, 1 cancel)
