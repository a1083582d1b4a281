"""The page of `alexnet-zoo serve` in a real browser: headless Chromium (Debian's `chromium`, which
.ci/run installs) loads it from a running uvicorn server, uploads a picture through the file input,
waits for the grid, checks the first hit is the picture's original, clicks a result with the mouse
and sees that result's neighbours, opens the duplicates view from the keyboard, checks the page fits
a phone-sized window, and takes the screenshot docs/serve.md shows (written to docs/serve.png with
ALEXNET_ZOO_SCREENSHOT=docs/serve.png).

Chromium is driven over its DevTools protocol (a websocket), so no browser-automation package is
needed. Skips, saying why, where no Chromium is installed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_features import REAL, variants
from test_serve import served  # noqa: F401 - the index fixture, shared

from alexnet_zoo.paths import atomic_write

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium): the browser "
                                                         "test needs a real browser")
websockets = pytest.importorskip("websockets", reason="the browser test drives Chromium through websockets")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
from alexnet_zoo.serve.app import create_app

# the picture docs/serve.md shows is refreshed only on request (ALEXNET_ZOO_SCREENSHOT=docs/serve.png): a test run
# must not write into the checkout
SCREENSHOT = os.environ.get("ALEXNET_ZOO_SCREENSHOT")
WAIT = 120.0  # seconds any one step may take before the test gives up (a limit, not a measurement)


@pytest.fixture(scope="module")
def server(served):  # noqa: F811 - the fixture imported above
    """The service on a free localhost port, run by uvicorn in a thread, as `alexnet-zoo serve` runs it."""
    folder, weights, _, _ = served
    app = create_app(folder, pretrained=str(weights), device="cpu", progress=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = running.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    running.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """(headless Chromium's process, its DevTools websocket URL of a blank page)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                "--window-size=1280,900", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = None
    for line in process.stderr:
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            url = found.group(1)
            break
    assert url, "Chromium did not start its DevTools endpoint"
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # drain its log
    yield url
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(20)
    if process.poll() is None:
        process.kill()


class DevTools:
    """The few DevTools protocol calls the test needs, over one websocket (flattened sessions)."""

    def __init__(self, socket: Any) -> None:
        self.socket, self.ids, self.session = socket, itertools.count(1), None

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        message = {"id": number, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(await asyncio.wait_for(self.socket.recv(), WAIT))
            if reply.get("id") == number:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, (expression, result["exceptionDetails"])
        return result["result"].get("value")

    async def until(self, expression: str, what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page never showed {what} ({expression}); status: "
                             f"{await self.js('document.getElementById(`status`).textContent')!r}")

    async def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element."""
        box = await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    async def key(self, key: str, code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)


async def _session(url: str) -> tuple[Any, DevTools]:
    socket = await websockets.connect(url, max_size=None)
    tools = DevTools(socket)
    target = (await tools.call("Target.createTarget", url="about:blank"))["targetId"]
    tools.session = (await tools.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
    for domain in ("Page", "Runtime", "DOM"):
        await tools.call(f"{domain}.enable")
    return socket, tools


async def _scenario(url: str, page: str, query: Path, paths: list[str]) -> bytes:
    socket, tools = await _session(url)
    try:
        await tools.call("Emulation.setDeviceMetricsOverride", width=1200, height=900, deviceScaleFactor=1,
                         mobile=False)
        await tools.call("Page.navigate", url=page)
        await tools.until("document.body && document.body.dataset.ready === '1'", "the index info")
        assert f"{len(paths)} pictures" in await tools.js("document.getElementById('info').textContent")
        # upload through the file input, as a person picking a file does
        root = (await tools.call("DOM.getDocument"))["root"]["nodeId"]
        node = (await tools.call("DOM.querySelector", nodeId=root, selector="#file"))["nodeId"]
        await tools.call("DOM.setFileInputFiles", nodeId=node, files=[str(query)])
        await tools.until("document.getElementById('grid').dataset.state === 'ready'", "the grid of neighbours")
        hits = await tools.js("[...document.querySelectorAll('#grid .hit')].map(h => [h.dataset.id, h.dataset.path, "
                              "h.querySelector('.score').textContent])")
        assert hits[0][1] == paths[2], hits  # the cropped rocket: its original first
        assert len(hits) == len(paths) and [float(s) for _, _, s in hits] == sorted((float(s) for _, _, s in hits),
                                                                                     reverse=True)
        assert await tools.until("[...document.querySelectorAll('#grid .hit img')].every(i => i.complete && "
                                 "i.naturalWidth > 0)", "every thumbnail")
        # click the result that is coffee.png: its neighbours come, its byte copy first
        coffee = next(i for i, p, _ in hits if p == paths[1])
        await tools.click(f"#grid .hit[data-id='{coffee}']")
        await tools.until(f"document.getElementById('grid').dataset.query.startsWith('#{coffee} ') && "
                          "document.getElementById('grid').dataset.state === 'ready'", "the clicked result's neighbours")
        after = await tools.js("[...document.querySelectorAll('#grid .hit')].map(h => [h.dataset.path, "
                               "h.querySelector('.score').textContent])")
        assert after[0][0] == paths[-1] and float(after[0][1]) > 0.9999, after
        assert paths[1] not in [p for p, _ in after]
        await tools.until("[...document.querySelectorAll('#grid .hit img')].every(i => i.complete && "
                          "i.naturalWidth > 0)", "every thumbnail")
        shot = base64.b64decode((await tools.call("Page.captureScreenshot", format="png"))["data"])
        # the duplicates view, from the keyboard: focus the tabs, arrow to the next one
        await tools.js("document.getElementById('tab-search').focus()")
        await tools.key("ArrowRight", 39)
        await tools.until("document.getElementById('groups').dataset.state === 'ready'", "the duplicate groups")
        assert await tools.js("document.activeElement.id") == "tab-dups"
        assert await tools.js("document.querySelectorAll('#groups .group').length") >= 1
        # a phone-sized window: nothing wider than the screen
        await tools.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        await tools.call("Page.reload")
        await tools.until("document.body && document.body.dataset.ready === '1'", "the index info on a phone")
        assert await tools.js("document.documentElement.scrollWidth") <= 390
        return shot
    finally:
        await socket.close()


def test_the_page_in_headless_chromium(server, browser, served, tmp_path):  # noqa: F811
    paths = served[2]
    query = variants(REAL[2], tmp_path / "q")["cropped"]
    shot = asyncio.run(_scenario(browser, server, query, paths))
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    target = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "serve.png"
    atomic_write(target, lambda tmp: tmp.write_bytes(shot))
    assert target.stat().st_size > 10_000  # a real picture of the page, not an empty frame
