// Package supervisor is the process tree of `shoal serve`: it runs the
// embedded NATS server (unless an external one is named), pre-forks the
// worker processes that share the gateway port, runs the bundled services
// as processes of their own, restarts any child that dies, turns signals
// into lifecycle (drain on SIGTERM, certificate reload in the workers on
// SIGUSR1, reload and rolling restart on SIGHUP), and serves
// the admin endpoint whose /metrics covers every worker in one scrape.
//
// Children are re-executions of the binary at the path the supervisor was
// started from, so that replacing it upgrades the workers at the next
// rolling restart. They are started with a parent-death signal, so that a
// supervisor killed outright still takes its children down with it. Each
// worker slot's listening socket is the supervisor's, inherited by the
// slot's worker, so that a replacement takes over the connections waiting
// in its queue.
package supervisor
