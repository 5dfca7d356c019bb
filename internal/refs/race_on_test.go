//go:build race

package refs

// The kill tests start a child per store; under the race detector each
// start costs ten times as much and the children are single goroutines with
// nothing to race, so .ci/run runs those tests without -race.
const raceEnabled = true
