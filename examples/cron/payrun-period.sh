#!/usr/bin/env bash
# Runs a payrun job for the current pay period: what cron or a systemd timer calls.
#
# The period is computed here, because neither can do it on the command line: systemd does
# not expand $(date …) in ExecStart, and a crontab's % must be escaped. Without a period,
# every month would run the job's default scope, and a later month would pay only the rows
# that are new.
#
#   PAYRUN   the payrun binary                      default: payrun
#   JOB      the job file                           default: jobs/payroll.yaml
#   PERIOD   the pay period (the job's vars.period)  default: this month, YYYY-MM, UTC
#
# Any further arguments go to `payrun run` (e.g. --metrics-file PATH, --state PATH).
# The exit code is payrun's, so cron and systemd see what happened:
#   0  every row done
#   1  rows need a look (failed, blocked, in doubt, waiting for funds, in conflict)
#   2  the job file or the input is invalid: nothing was sent
#   3  another run of the same job and period holds the lock
#   4  interrupted by a signal: run again to resume
#   5  fatal: credentials refused, the provider out of reach, the state database
#   6  the plan awaits approval (payrun approve): no payout was sent
#   7  a payout exists twice at the provider
# Only 0 is success.
set -u

payrun=${PAYRUN:-payrun}
job=${JOB:-jobs/payroll.yaml}
period=${PERIOD:-$(date -u +%Y-%m)}

"$payrun" run "$job" --var "period=$period" "$@"
code=$?
if [ "$code" -ne 0 ]; then
    case $code in
        1) what="rows need a look: payrun status $job --var period=$period" ;;
        2) what="the job file or the input is invalid; nothing was sent" ;;
        3) what="another run of this job and period holds the lock" ;;
        4) what="interrupted; run again to resume" ;;
        5) what="fatal: see the message above; the state is consistent" ;;
        6) what="awaiting approval; no payout was sent: payrun status $job --var period=$period" ;;
        7) what="A PAYOUT EXISTS TWICE at the provider: see the run's summary" ;;
        *) what="see the message above" ;;
    esac
    echo "payrun run $job --var period=$period exited $code: $what" >&2
fi
exit "$code"
