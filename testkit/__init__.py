"""Helpers shared by the tests and the benchmarks (never installed, never imported by `sam2_rt` or `sam2_ros`).

`waiting` polls for state that has no callback; `lifecycle` drives a lifecycle node's transitions so that a
lost service answer is told apart from a failed transition.
"""
