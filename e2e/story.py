"""The press line's user story, told against any running Spine: `spine up` or a real cluster.

`PressLine` holds the addresses a user has (the twin's API with its write token, the gateway's
/status, the simulated PLC's test API) and the steps of the story: a value changed at the PLC
shows in the twin; a desired target speed reaches the PLC, which follows, and is reported back.
`ChangeStream` follows the twin's SSE stream in a thread, so a test sees every stored change
of a thing with its revision. e2e/test_press_line_local.py and e2e/test_cluster.py use both.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from tests.support.processes import wait_until


@dataclass
class PressLine:
    twin_url: str
    thing_id: str  # plant_a:press-1
    write_token: str
    sim_url: str
    gateway_url: str

    def thing(self) -> dict[str, Any]:
        response = httpx.get(f"{self.twin_url}/api/2/things/{self.thing_id}", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def feature(self, name: str) -> dict[str, Any]:
        return dict(self.thing()["features"].get(name) or {})

    def reported(self, name: str) -> Any:
        return (self.feature(name).get("properties") or {}).get("value")

    def revision(self) -> int:
        response = httpx.get(
            f"{self.twin_url}/api/2/things/{self.thing_id}",
            params={"fields": "thingId,_revision"},
            timeout=5,
        )
        response.raise_for_status()
        return int(response.json()["_revision"])

    def twin_status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.twin_url}/status", timeout=5).json())

    def put_desired(self, name: str, value: Any, token: str | None = None) -> httpx.Response:
        return httpx.put(
            f"{self.twin_url}/api/2/things/{self.thing_id}/features/{name}/desiredProperties/value",
            json=value,
            headers={"Authorization": f"Bearer {self.write_token if token is None else token}"},
            timeout=5,
        )

    def plc(self) -> dict[str, Any]:
        """The simulated PLC's current values (its test API)."""
        response = httpx.get(f"{self.sim_url}/values", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def set_plc(self, **values: Any) -> dict[str, Any]:
        response = httpx.put(f"{self.sim_url}/values", json=values, timeout=5)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def gateway_status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.gateway_url}/status", timeout=5).json())


def a_plc_value_shows_in_the_twin(line: PressLine, timeout: float = 20.0) -> None:
    """Force a temperature at the PLC; the twin reports it; release it again."""
    line.set_plc(temperature=97.5)  # exact in float32, the register's type
    try:
        wait_until(
            lambda: line.reported("temperature") == 97.5,
            timeout,
            "the PLC's temperature of 97.5 in the twin",
        )
    finally:
        line.set_plc(temperature=None)


def a_desired_speed_reaches_the_plc(line: PressLine, speed: int, timeout: float = 30.0) -> None:
    """Set the desired target speed in the twin; the PLC gets it and the press follows; the
    twin reports both and marks the desired value reached."""
    refused = line.put_desired("targetSpeed", speed, token="not-the-token")
    assert refused.status_code == 401, refused.text
    accepted = line.put_desired("targetSpeed", speed)
    assert accepted.status_code in (200, 201, 204), accepted.text
    wait_until(lambda: line.plc()["targetSpeed"] == speed, timeout, f"the PLC's set point {speed}")

    def reported_back() -> bool:
        feature = line.feature("targetSpeed")
        desired = feature.get("desiredProperties") or {}
        return bool(
            (feature.get("properties") or {}).get("value") == speed
            and desired.get("value") == speed
            and desired.get("status") == "reached"
        )

    wait_until(reported_back, timeout, f"targetSpeed {speed} reported back and reached")
    # the press ramps at 10 spm per second; the gateway reports the actual speed (deadband 0.1)
    wait_until(
        lambda: abs(float(line.reported("actualSpeed")) - speed) < 0.5,
        timeout,
        f"the press's actual speed to follow to {speed}",
    )


class ChangeStream:
    """Every change of one thing the twin stores, from its SSE stream, in a thread."""

    def __init__(self, twin_url: str, thing_id: str) -> None:
        self.url = f"{twin_url}/api/2/things"
        self.thing_id = thing_id
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)
        self._closing = False

    def start(self) -> ChangeStream:
        self._thread.start()
        wait_until(lambda: self.connected.is_set() or self.error, 15, "the SSE stream")
        assert self.error is None, self.error
        return self

    def _run(self) -> None:
        try:
            with self._client.stream(
                "GET",
                self.url,
                params={"ids": self.thing_id},
                headers={"Accept": "text/event-stream"},
            ) as response:
                response.raise_for_status()
                self.connected.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        with self.lock:
                            self.events.append(event)
        except BaseException as error:  # recorded for the test; a close() also ends up here
            if not self._closing:
                self.error = error
        if not self._closing and self.error is None:
            self.error = ConnectionError("the twin closed the SSE stream")

    def between(self, after: int, upto: int) -> list[dict[str, Any]]:
        """Events with revisions in (after, upto], in arrival order."""
        assert self.error is None, f"the SSE stream broke: {self.error!r}"
        with self.lock:
            return [e for e in self.events if after < int(e["_revision"]) <= upto]

    def close(self) -> None:
        self._closing = True
        self._client.close()
        self._thread.join(5)
