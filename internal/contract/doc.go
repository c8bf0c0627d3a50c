// Package contract holds the tests that hold the services to
// docs/asyncapi.yaml: frames the real services emit and envelopes the code
// writes must validate against the published schemas.
package contract
