// File: base/stop_signal.h
//
// Turns the signals a scheduler sends before it ends a job (SIGTERM at a SLURM time limit, on
// preemption or scancel; SIGUSR1 from `sbatch --signal` or forwarded by mpirun; SIGINT from
// Ctrl-C) into a request the training loop polls, so it can stop at a step boundary with a
// checkpoint instead of dying mid-step (Note [Stop requests] in core/trainer.h). The first signal
// is recorded and announced on stderr; the handler is then reset to the default action, so a
// second one ends the process at once, as without the handler.
//
// Threading: installStopSignals() once, from one thread (further calls do nothing);
// stopSignal() from any thread. The handler only stores into a lock-free atomic and calls
// write(2).
//
// Example:
//   thinwire::installStopSignals("thinwire");
//   while (training) { ...; if (thinwire::stopSignal() != 0) break; }
#pragma once

#include <string_view>

namespace thinwire {

// Installs the handler for SIGTERM, SIGUSR1 and SIGINT. `program` prefixes the announcement
// (truncated to 63 bytes).
void installStopSignals(std::string_view program);

// The first stop signal received since installStopSignals(), 0 if none.
int stopSignal();

}  // namespace thinwire
