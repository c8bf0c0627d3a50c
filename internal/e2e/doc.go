// Package e2e holds the end-to-end tests of the whole system: the three
// services in-process against real redis-server, a kfake broker and a fake
// OpenAI server, and as separate processes behind real nginx.
package e2e
