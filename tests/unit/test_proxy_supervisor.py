"""The proxy supervisor's readings of HAProxy's master CLI: `show proc` and `show stat`.

The texts are HAProxy 2.6.12's, as the supervisor received them; the supervisor's behaviour
with the real HAProxy is in tests/integration/test_proxy.py.
"""

from __future__ import annotations

from spine_runtime.config.proxy import RouteInfo
from spine_runtime.proxy.haproxy import current_worker_pids, route_health

SHOW_PROC_AFTER_RELOAD = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
20727           master          1 [failed: 0]   0d00h00m02s     2.6.12-1+deb12u4
# workers
20821           worker          0               0d00h00m01s     2.6.12-1+deb12u4
# old workers
20730           worker          1               0d00h00m02s     2.6.12-1+deb12u4
# programs

"""

SHOW_STAT = (
    "# pxname,svname,qcur,status,check_status,last_chk\n"
    "public,FRONTEND,,OPEN,,\n"
    "route-orders,orders,0,UP,L4OK,\n"
    "route-orders,BACKEND,0,UP,,\n"
    "route-dead,dead,0,DOWN,* L4CON,Connection refused\n"
    "route-plain,plain,0,no check,,\n"
)


def test_only_current_workers_count_after_a_reload() -> None:
    assert current_worker_pids(SHOW_PROC_AFTER_RELOAD) == [20821]


def test_route_health_maps_server_rows_to_routes() -> None:
    routes = [
        RouteInfo(name="orders", path="/o", owner="ServiceRegistration/orders"),
        RouteInfo(name="dead", path="/d"),
        RouteInfo(name="plain", path="/p"),
        RouteInfo(name="missing", path="/m"),
    ]
    health = {entry["name"]: entry for entry in route_health(SHOW_STAT, routes)}
    assert health["orders"]["up"] is True and health["orders"]["owner"].endswith("/orders")
    assert health["dead"]["up"] is False
    assert health["dead"]["detail"] == "DOWN, L4CON, Connection refused"
    assert health["plain"]["up"] is None
    assert health["missing"] == {
        "name": "missing",
        "path": "/m",
        "owner": None,
        "up": None,
        "detail": "not in HAProxy's stats",
    }
