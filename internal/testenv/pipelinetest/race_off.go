//go:build !race

package pipelinetest

const raceEnabled = false
