// Package faulttest runs the whole pipeline — receiver, consumers, embedded NATS (single node or a
// 3-node JetStream cluster) and a real redis-server — under faults and hostile input, and checks the
// delivery promise with internal/testenv/audit: nothing acknowledged is lost, nothing is published twice,
// nothing is published that WeChat Pay did not sign. It holds tests only.
//
// Sizes are chosen for CI (the package runs in a few minutes under -race on two cores); -long (or LONG=1)
// runs bigger loads, and -soak=10m (or SOAK=10m) a long soak (give go test a -timeout above it):
//
//	go test -race -run TestSoak -timeout 30m ./internal/faulttest -soak=10m
package faulttest
