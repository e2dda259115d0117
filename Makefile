# Benchmarks (issue #7). See BENCHMARKS.md for what they measure and the last results.

BENCH_OUT ?= bench/results/$(shell date -u +%Y-%m-%d).txt

.PHONY: bench bench-smoke

# The full suite: Go benchmarks, saturation and fixed-rate runs of bare/receiver/inline/pipeline, and the
# 100,000-notification backlog drain. Takes 15-30 minutes on 2 cores; writes the raw output to $(BENCH_OUT).
bench:
	go run ./bench -suite all -out $(BENCH_OUT)

# Every part with a handful of requests: checks the harness in seconds (the figures mean nothing).
bench-smoke:
	go run ./bench -smoke
