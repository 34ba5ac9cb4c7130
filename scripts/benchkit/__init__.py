"""The benchmark harness behind ``scripts/bench.py``.

Modes (``scripts/bench.py MODE --help`` for the options of each):

  pipe          stream pairs, one sender and one long-polling receiver each:
                delivered msg/s, latency, server CPU per message, against
                ipubsub or a reference (trivial aiohttp endpoint, naive aiohttp
                queue, Redis RPUSH/BLPOP, Redis batches), in interleaved rounds
  idle          K waiting long polls: server RSS per waiting poll, then the
                time to deliver one message to each
  streams       N streams holding one small message each: RSS per stream
  cluster       the pipe straight to the stream's owner versus through another
                node: msg/s, latency, total CPU per message over all nodes
  cluster-idle  K waiting polls through a node that does not own the streams:
                the owner's (and the entry node's) RSS per forwarded poll
  lb            plain clients picking a node at random for every call on 2 and
                3 nodes, next to one node alone: total CPU per message
  client        ipubsub.client.AsyncClient (calls each stream's owner) versus a
                plain aiohttp session sending everything to one node
  persist       persisted sends at W concurrent writers (single sends or
                sendBatch calls of N), then a replay
  replay        a durable log read from the start through tokens: single
                reads next to maxMessages=N batches, interleaved rounds
  fanout        one sender, R readers each getting every message: an ipubsub
                history, the durable log on SQLite, Redis lists (RPUSH/BLPOP)

Against a running server: ``--url URL --pid PID`` (``--pid`` repeatable: CPU
is summed over every pid given).  With ``--spawn`` the harness starts the
servers itself (``servers.Launcher``): pinned to ``--server-cpu`` (0), the
harness pinned to ``--client-cpu`` (1), random loopback ports, generated
configs, storage none unless a mode says otherwise, all stopped at the end.

Layout:
  rawhttp.py   raw HTTP/1.1 keep-alive client (far cheaper than the servers)
  resp.py      raw RESP client for Redis
  procstat.py  CPU time (summed over pids) and RSS from /proc
  window.py    the measurement window: warm-up, measure, stop; ``Tally`` → row
  rounds.py    interleaved rounds and the summary (medians of in-round ratios)
  servers.py   ``Launcher``: ipubsub nodes and clusters, baselines, redis-server
  options.py   command-line options every mode shares
  modes/       one module per family: pipe (+ redis), memory, cluster, client,
               persist

Adding a mode (e.g. ``sse``):
  1. Write ``modes/sse.py`` with an ``async def run(args, launch)`` that
     yields result rows (dicts) and an ``add_parsers(sub)`` that calls
     ``options.add_mode(sub, "sse", run, help)`` and adds its own options
     (``options.add_window`` / ``add_rounds`` for the shared ones).
  2. Add the module to ``FAMILIES`` in ``modes/__init__.py``.
  3. Build the load from ``window.run_window`` (the loops count only while
     ``Window.measuring``; ``Tally.report`` makes the row) and, to compare
     with a reference in the same run, give ``rounds.interleave`` a plan of
     ``(label, measure)`` pairs: it runs them in interleaved rounds and adds
     the summary rows with ``ratio_to_<label>``.  ``modes/pipe.py`` is the
     example; Redis as reference: ``modes.redis.redis_pipe`` on
     ``launch.redis()``.
  4. Run it for a fraction of a second in ``tests/e2e/test_bench_smoke.py``
     and add it to ``scripts/bench-all.sh``.
A new option of an existing target: ``pipe.KINDS`` says what each target
can do (``batch=True``: ipubsub's sendBatch / maxMessages, Redis RPUSH of N /
BLMPOP COUNT N), its ``measure`` drives it.
"""
