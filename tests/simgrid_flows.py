"""SimGrid reference for hierfl's flow model: end times of flows under max-min fair sharing.

Run it with the system python that has Debian's ``python3-simgrid``
(``apt-get install -y python3-simgrid``), not the project's venv::

    /usr/bin/python3 tests/simgrid_flows.py < cases.json

stdin holds ``{"cases": [case, ...]}``; each case is ``{"capacity_bytes_s": [c0, c1, ...],
"flows": [{"start_s", "size_bytes", "cap_bytes_s", "path", "stop_s"}, ...]}`` where
``size_bytes`` is an integer (SimGrid's comms carry whole bytes), ``cap_bytes_s`` is the
flow's private access link (null: none), ``path`` lists indices into ``capacity_bytes_s`` and
``stop_s`` (optional, null: never) is when the sender gives up. stdout gets
``{"cases": [{"end_s": [...], "sent_bytes": [...]}, ...]}`` in the same order.

The platform is built in code. Every flow has its own source and destination host, routed
over its private link (when it has a cap) then its shared links. Links have zero latency: in
CM02 a flow's sharing weight is its route latency, so zero latency gives every flow weight 1
(plain max-min, no RTT weighting) and TCP-gamma adds no window bound (it divides by the
latency and is skipped at zero). Cases use disjoint links and hosts, so all of them run in one
simulation: max-min over disjoint links splits into independent problems.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

CONFIG = [
    "--cfg=network/model:CM02",
    "--cfg=network/crosstraffic:0",
    # CM02's own defaults, stated so that no other default can slip in.
    "--cfg=network/bandwidth-factor:1",
    "--cfg=network/latency-factor:1",
    "--cfg=network/weight-S:0",
    # Default 1e-5: the solver treats a link as saturated within 1e-5 of its capacity.
    "--cfg=maxmin/precision:1e-10",
    # Default 1e-9 s: events closer than this are merged.
    "--cfg=surf/precision:1e-12",
    "--log=root.thres:critical",
]

HOST_SPEED_FLOPS = 1e9  # Hosts only send; their speed never enters a transfer time.


def build_case(zone: Any, simgrid: Any, tag: str, case: dict[str, Any]) -> list[dict[str, Any]]:
    """Create one case's links, hosts and routes; return one send order per flow."""
    shared = [zone.create_link(f"{tag}l{j}", float(c)).seal()
              for j, c in enumerate(case["capacity_bytes_s"])]
    orders = []
    for i, flow in enumerate(case["flows"]):
        links = [shared[j] for j in flow["path"]]
        if flow.get("cap_bytes_s") is not None:
            links.insert(0, zone.create_link(f"{tag}f{i}cap", float(flow["cap_bytes_s"])).seal())
        src = zone.create_host(f"{tag}f{i}src", HOST_SPEED_FLOPS).seal()
        dst = zone.create_host(f"{tag}f{i}dst", HOST_SPEED_FLOPS).seal()
        if links:
            zone.add_route(src.netpoint, dst.netpoint, None, None,
                           [simgrid.LinkInRoute(link) for link in links], False)
        stop = flow.get("stop_s")
        orders.append({"src": src, "dst": dst, "start_s": float(flow["start_s"]),
                       "size_bytes": int(flow["size_bytes"]), "routed": bool(links),
                       "stop_s": math.inf if stop is None else float(stop)})
    return orders


def sender(simgrid: Any, order: dict[str, Any], result: dict[str, float]) -> None:
    """Actor body: wait for the start, send, give up at stop_s; record end time and bytes sent."""
    start, stop, size = order["start_s"], order["stop_s"], order["size_bytes"]
    if stop <= start:
        simgrid.this_actor.sleep_until(stop)
        result.update(end_s=simgrid.Engine.clock, sent_bytes=0.0)
        return
    simgrid.this_actor.sleep_until(start)
    if not order["routed"]:  # no link constrains it: SimGrid has no route, the bytes go at once
        result.update(end_s=simgrid.Engine.clock, sent_bytes=float(size))
        return
    comm = simgrid.Comm.sendto_async(order["src"], order["dst"], size)
    if math.isinf(stop):
        comm.wait()
        result.update(end_s=simgrid.Engine.clock, sent_bytes=float(size))
        return
    # wait_any_for leaves the comm as it is on timeout (wait_for zeroes its remaining bytes).
    if simgrid.Comm.wait_any_for([comm], stop - simgrid.Engine.clock) == 0:
        result.update(end_s=simgrid.Engine.clock, sent_bytes=float(size))
        return
    result.update(end_s=simgrid.Engine.clock, sent_bytes=size - comm.remaining)
    comm.cancel()


def simulate(cases: list[dict[str, Any]]) -> list[dict[str, list[float]]]:
    """Run every case in one SimGrid simulation; return each flow's end time and bytes sent."""
    import simgrid  # the system python's package; imported here so the venv can collect this file

    engine = simgrid.Engine([sys.argv[0], *CONFIG])
    zone = simgrid.NetZone.create_full_zone("world")
    orders = [build_case(zone, simgrid, f"c{k}", case) for k, case in enumerate(cases)]
    zone.seal()
    results = [[{} for _ in case_orders] for case_orders in orders]
    for case_orders, case_results in zip(orders, results, strict=True):
        for order, result in zip(case_orders, case_results, strict=True):
            simgrid.Actor.create("sender", order["src"], sender, simgrid, order, result)
    engine.run()
    return [{"end_s": [r["end_s"] for r in case_results],
             "sent_bytes": [r["sent_bytes"] for r in case_results]} for case_results in results]


def main() -> None:
    """Read the batch from stdin, print the results to stdout."""
    cases = json.load(sys.stdin)["cases"]
    json.dump({"cases": simulate(cases)}, sys.stdout)


if __name__ == "__main__":
    main()
