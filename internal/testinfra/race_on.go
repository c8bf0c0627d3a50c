//go:build race

package testinfra

const raceEnabled = true
