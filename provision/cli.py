"""python -m provision PLAN.json [--dry-run] [--only STEP ...] [--skip STEP ...]"""

from __future__ import print_function

import json
import optparse
import sys
import time

from provision import packages, services, steps
from provision.runner import Runner, StepFailed

PLAN_FORMAT = 1
LOG = "/var/log/goldbox-provision.log"


def parse(argv):
    names = [name for name, _ in steps.STEPS]
    parser = optparse.OptionParser(
        usage="python -m provision PLAN.json [--dry-run] [--only STEP ...] [--skip STEP ...]",
        description="Run goldbox's provisioning plan: " + ", ".join(names) + ".")
    parser.add_option("--dry-run", action="store_true", default=False,
                      help="print the ordered commands and files, for a fresh system; "
                           "change nothing")
    parser.add_option("--only", action="append", default=[], metavar="STEP",
                      help="run only this step (repeatable)")
    parser.add_option("--skip", action="append", default=[], metavar="STEP",
                      help="leave this step out (repeatable)")
    options, args = parser.parse_args(argv)
    if len(args) != 1:
        parser.error("expected one PLAN.json")
    for name in options.only + options.skip:
        if name not in names:
            parser.error("unknown step %r (steps: %s)" % (name, ", ".join(names)))
    return options, args[0]


def load_plan(path):
    try:
        plan = json.load(open(path))
    except (IOError, OSError, ValueError):
        error = sys.exc_info()[1]
        raise SystemExit("provision: cannot read plan %s: %s" % (path, error))  # noqa: B904
    if plan.get("format") != PLAN_FORMAT:
        raise SystemExit("provision: %s: plan format %r, this provision/ reads %d"
                         % (path, plan.get("format"), PLAN_FORMAT))
    return plan


def format_table(rows):
    width = max([len(name) for name, _, _, _ in rows] + [4])
    lines = ["%-*s  %-9s  %8s  %s" % (width, "step", "result", "seconds", "note")]
    for name, result, seconds, note in rows:
        lines.append("%-*s  %-9s  %8.1f  %s" % (width, name, result, seconds, note))
    return "\n".join(lines)


def main(argv):
    options, path = parse(argv)
    plan = load_plan(path)
    runner = Runner(dry_run=options.dry_run, log_path=None if options.dry_run else LOG)
    context = steps.Context(plan, runner,
                            packages.ADAPTERS[plan["adapters"]["packages"]](runner),
                            services.ADAPTERS[plan["adapters"]["services"]](runner))
    chosen = [(name, step) for name, step in steps.STEPS
              if (not options.only or name in options.only) and name not in options.skip]
    rows = []
    runner.say("provision: %s, %d steps%s" % (plan["platform"], len(chosen),
                                               " (dry run)" if options.dry_run else ""))
    for name, step in chosen:
        runner.say("==> %s" % name)
        start = time.time()
        try:
            changed, note = step(context)
        except StepFailed:
            failure = sys.exc_info()[1]
            runner.say("provision: step %s failed: `%s` exited with %s; last lines:"
                       % (name, failure.command, failure.code))
            for line in failure.tail:
                runner.say("  | " + line)
            rows.append((name, "FAILED", time.time() - start, failure.command))
            runner.say(format_table(rows))
            return 1
        except (ValueError, OSError, KeyError):
            error = sys.exc_info()[1]
            runner.say("provision: step %s failed: %s" % (name, error))
            rows.append((name, "FAILED", time.time() - start, str(error)))
            runner.say(format_table(rows))
            return 1
        rows.append((name, "changed" if changed else "unchanged", time.time() - start, note))
    runner.say(format_table(rows))
    return 0


if __name__ == "__main__":  # python -m provision.cli (Python 2.6 cannot -m a package)
    sys.exit(main(sys.argv[1:]))
