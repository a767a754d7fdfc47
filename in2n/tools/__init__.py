"""Command-line tools that work on finished runs: in2n-compare, in2n-export, in2n-eval, in2n-plot."""
