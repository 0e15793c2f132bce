"""Reproduces the NatsLink lost publish (issue 17 blocker): run from the repo root with
.venv/bin/python scratch/repro_link_loss.py; prints LOST lines (2-11 of 150 here). Not part of the suite."""
import asyncio, secrets, tempfile, sys
from pathlib import Path
import nats
from gateway.embedded_nats import NatsServer
from gateway.io.nats_link import NatsLink
from shared.nats_connection import NatsOptions

async def main():
    d = Path(tempfile.mkdtemp())
    server = NatsServer.start(d / "nats", log_file=d / "nats.log")
    fails = 0
    seen = []  # with a third client subscribed to "test.>" here, nothing was lost in 2 x 150
    try:
        for i in range(150):
            other = await nats.connect(server.url)
            link = await NatsLink.connect(NatsOptions(servers=[server.url], name="t", connect_timeout=3.0))
            subject = f"test.{secrets.token_hex(4)}"
            msgs = []
            await link.subscribe(subject, lambda s, r, p, h: msgs.append(p))
            await link.flush()
            await other.publish(subject, b"to the link", headers={"K": "v"})
            for _ in range(1000):
                if msgs: break
                await asyncio.sleep(0.005)
            got = asyncio.get_running_loop().create_future()
            async def on_msg(msg):
                if not got.done(): got.set_result(msg)
            sub = await other.subscribe(subject + ".back", cb=on_msg)
            await other.flush()
            written = []
            t = link._transport
            orig = t.write
            def w(data, orig=orig): written.append(bytes(data)); return orig(data)
            t.write = w
            await link.publish(subject + ".back", b"from the link", {"H": "1"})
            try:
                await asyncio.wait_for(asyncio.shield(got), 3)
            except TimeoutError:
                fails += 1
                print("LOST", i, "sched", link._write_scheduled, "out", link._out, "control", link._control, "transport", link._transport, "pongs", link._pongs, flush=True)
                await link.flush(); await other.flush(); await asyncio.sleep(1)
                print("written", written, "spy saw", [x for x in seen if x.startswith(subject)], flush=True)
                print("after flush got?", got.done(), got.done() and (got.result().data, got.result().headers), flush=True)
            await link.close(); await other.close()
    finally:
        server.stop()
    print("fails", fails)
asyncio.run(main())
