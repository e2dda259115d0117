//go:build !linux

package main

import (
	"os/exec"
	"time"
)

func setDeathSignal(*exec.Cmd) {}

// CPU accounting reads getrusage and /proc; elsewhere the CPU column reads 0.
func selfCPU() time.Duration    { return 0 }
func procCPU(int) time.Duration { return 0 }
func loadAvg() string           { return "unavailable" }
func cpuModel() string          { return "unknown" }
