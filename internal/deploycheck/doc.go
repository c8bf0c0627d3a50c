// Package deploycheck holds checks of the deployment files at the repo root:
// docker-compose.yml (plus any docker-compose.*.yml overlay, loaded together
// with it), the Dockerfile and nginx/nginx.conf.
//
// The checks are tests only: they load the compose files with the loader of
// Docker Compose v2 (compose-go; v1 is end of life and not used) and verify what `docker compose up` would
// otherwise only reveal at run time on a machine with a Docker engine —
// healthchecks behind every `condition: service_healthy`, existing build
// contexts, Dockerfiles and bind-mounted files, and nginx upstream servers
// that match the websocket-server-* services and their port.
package deploycheck
