"""Instruments that check the node and the policy from outside: the fuzzer (`fuzz`), the audit
of every command against the arm (`audit`), the node benchmark (`bench_node`) and the recorded-run
evaluators (`eval_bag` open loop, `eval_live` against a running node). Torch-free at import: what
runs a model loads it inside the function that needs it.
"""
