//go:build !race

package testinfra

const raceEnabled = false
