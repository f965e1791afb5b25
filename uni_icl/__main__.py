"""Entry point of ``python -m uni_icl``.

Ctrl-C or SIGTERM before the work starts (importing torch and the experiments takes seconds)
ends with one line, like one during the work (:mod:`uni_icl.stopping`).
"""

import sys

from uni_icl.stopping import exit_status, terminate_as_interrupt

with terminate_as_interrupt():
    try:
        from uni_icl.cli import main

        status = main()
    except KeyboardInterrupt as interrupt:
        print("interrupted: before any work started; nothing was done", file=sys.stderr)
        status = exit_status(interrupt)
sys.exit(status)
