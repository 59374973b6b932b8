"""Evaluation: open-loop scoring of recorded episodes (`open_loop`) and its HTML report
(`report`), and the benchmarks that print figures (`bench` for inference, `bench_train` for
training). Meta-World, with the reference's protocol, is a room of its own (`evo1_policy.metaworld`)."""
