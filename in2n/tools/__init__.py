"""Command-line tools that work on finished runs: in2n-compare, in2n-export, in2n-eval, in2n-plot.

Each is one of in2n's own commands, so importing this package sets the process up for in2n (`in2n.process`): before
a tool's module imports nerfstudio, whose modules warn as they load, and before its command line is read.
"""

from in2n.process import prepare_process

prepare_process()
