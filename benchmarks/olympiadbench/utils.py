"""lm-eval hook of this task: math-verify on every kept response, averaged.
The implementation lives in layerbench.mathverify (one rule for training
rewards and evaluation)."""

from layerbench.mathverify import process_results  # noqa: F401
