// Package faulttest runs the whole pipeline — receiver, consumers, embedded NATS (single node or a
// 3-node JetStream cluster) and a real redis-server (or a Sentinel deployment) — under faults and hostile
// input, and checks the delivery promise with internal/testenv/audit: nothing acknowledged is lost,
// nothing is published twice, nothing is published that WeChat Pay did not sign. It holds tests only.
//
// Sizes are chosen for CI (the package runs in a few minutes under -race on two cores); -long (or LONG=1)
// runs bigger loads, and -soak=1h (or SOAK=1h) a long soak, with nats-server in a process of its own,
// whose log is a table of every process's goroutines, heap, file descriptors and memory over time (give
// go test a -timeout above it; without -race the memory figures are production-like):
//
//	go test -run TestSoak -timeout 90m -v ./internal/faulttest -soak=1h
package faulttest
