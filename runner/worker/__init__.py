"""A worker: claim ready tasks, execute them, keep its lease alive, record results.

One `Worker` runs four thread roles (like dramatiq's Worker / ConsumerThread / WorkerThread),
each owning its thread, lock and stop event, sharing only `Held` (the attempts it holds):
- the claim loop (`_claim.ClaimLoop`, in the thread that calls `Worker.run`) claims ready
  tasks while there is room;
- the heartbeat thread (`_lease.LeaseKeeper`) renews the lease, sweeps, keeps the self-fencing
  deadline and fences (docs/GUARANTEES.md, G3 and G5);
- the slot threads (`_slots.SlotThreads`) run the attempts and record them, each finish
  claiming the slot's next task (`_finish.Finisher`: the one fence/retry loop);
- with prefetch, the recorder thread (`_recorder.Recorder`) records the slots' outcomes in
  batches.
docs/ARCHITECTURE.md ("The worker") describes how they work together.
"""

from runner.worker._held import AttemptExecutor
from runner.worker._lease import SWEEP_INTERVAL
from runner.worker._slots import log_name
from runner.worker._worker import Worker

__all__ = ["SWEEP_INTERVAL", "AttemptExecutor", "Worker", "log_name"]
