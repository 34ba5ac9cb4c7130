"""``ipubsub check``: a fault-injection checker for the guarantees in the
README.  It starts a local cluster (:mod:`.cluster`, with TCP proxies from
:mod:`.proxy` on every path a fault can break), runs a workload that records
every call (:mod:`.workload`, :mod:`.history`), injects faults from a seeded
plan (:mod:`.faults`), and judges the history (:mod:`.analysis`,
:mod:`.report`).  :func:`ipubsub.checker.run.run_check` is the whole run.

Nothing is imported here, so ``ipubsub serve`` does not pay for the checker.
"""
